"""Semi-synthetic missing-not-at-random (MNAR) implicit feedback with known ground truth.

Relevance and exposure are separate, as in Saito et al. (2020): a click needs both.
- Relevance: gamma_ui = sigmoid(affinity * <u, v> + bias), latent factors per user and item;
  one fixed draw R_ui ~ Bern(gamma_ui) per pair, reproducible from (seed, u, i) by a hash,
  so the full-information truth can be computed for any pair without storing it.
- Exposure: user u sees m_u items drawn with replacement from p_i, a Zipf law over a random
  item order with exponent `popularity_bias` (0 = uniform); so theta_ui = 1 - (1 - p_i)^m_u.
- Clicks Y = O * R in a training period, and again with fresh exposures in a later test
  period (clicks already seen in training are left out of it): the biased test set.
- An unbiased test set: `mar_items` items per user exposed uniformly at random (among items
  not clicked in training), labelled with R, like Yahoo! R3 and Coat.
- Graded levels for clicks (1 click, 2 cart, 3 purchase; deeper levels for more relevant
  pairs), timestamps, item categorical features and short text titles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity
from recsys.errors import RecsysError

GENRES = ["rock", "jazz", "folk", "soul", "metal", "pop", "blues", "disco", "indie", "opera",
          "house", "punk"]
ADJECTIVES = ["quiet", "electric", "golden", "broken", "endless", "midnight", "wild", "silver",
              "lonely", "bright", "velvet", "hidden"]
NOUNS = ["river", "city", "heart", "road", "summer", "storm", "garden", "mirror", "fire", "ocean",
         "dream", "signal"]
MASK64 = (1 << 63) - 1
LEVEL_NAMES = ("click", "cart", "purchase")


@dataclass(frozen=True)
class CandidateSet:
    """Per-user candidate items with binary labels (a uniformly exposed test set). Where the
    generator knows them: `relevance`, each pair's relevance probability gamma, and `gains`,
    each label's expectation. The candidates are drawn among pairs not clicked in training,
    and a label is the same draw R that decided the training click, so
    E[R | no click] = gamma (1 - theta) / (1 - theta gamma) (theta: training exposure)."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    gains: np.ndarray | None = None
    relevance: np.ndarray | None = None

    def expected(self, of: Literal["label", "relevance"] = "label") -> CandidateSet:
        """The same candidates labelled with their expected label (`of="label"`) or gamma.
        A DCG@K on them (sum of the value / log2(rank + 1) over each user's top K) is, for
        "label", the expected DCG@K over the draws of R and exposure, without their noise; it
        averages over every user, where the drawn labels' metrics average over the users with
        at least one relevant candidate."""
        values = self.gains if of == "label" else self.relevance
        if values is None:
            raise RecsysError(f"these candidates have no expected {of}s")
        return CandidateSet(self.users, self.items, values, self.gains, self.relevance)


def expected_labels(gamma: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """E[R | not clicked] = gamma (1 - theta) / (1 - theta gamma) for R ~ Bern(gamma) and
    exposure O ~ Bern(theta), a click being O * R (float32); 0 where a click is certain."""
    gamma, theta = np.asarray(gamma, np.float64), np.asarray(theta, np.float64)
    unclicked = 1 - theta * gamma
    out = np.divide(gamma * (1 - theta), unclicked, out=np.zeros_like(unclicked), where=unclicked > 0)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Relevance:
    """The ground truth: gamma = sigmoid(affinity * <u, v> + bias) and its fixed draws R."""

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    affinity: float
    bias: float
    seed: int

    def relevance_probability(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """gamma for pairs (aligned arrays)."""
        u = self.user_factors[torch.as_tensor(users)]
        v = self.item_factors[torch.as_tensor(items)]
        return torch.sigmoid(self.affinity * (u * v).sum(-1) + self.bias)

    def relevance(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """The fixed relevance draw R (bool) for pairs (aligned arrays)."""
        n_items = self.item_factors.shape[0]
        keys = torch.as_tensor(users, dtype=torch.long) * n_items + torch.as_tensor(items)
        return _hash_uniform(keys, self.seed) < self.relevance_probability(users, items)

    def relevance_matrix(self, users: np.ndarray) -> torch.Tensor:
        """R for the given users over all items, [len(users), n_items] bool."""
        n_items = self.item_factors.shape[0]
        u = np.repeat(np.asarray(users), n_items)
        i = np.tile(np.arange(n_items), len(users))
        return self.relevance(u, i).reshape(len(users), n_items)


@dataclass(frozen=True)
class Simulation(Relevance):
    """Everything a simulation produced; all Interactions share one pair of id maps."""

    train: Interactions
    test: Interactions
    unbiased_test: CandidateSet
    train_propensity: Propensity
    test_propensity: Propensity
    item_features: pd.DataFrame
    item_text: pd.DataFrame


def _hash_uniform(keys: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform [0, 1) per integer key, stable across runs (a splitmix-style integer hash)."""
    x = (keys * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & MASK64
    for mult in (0x7FEB352D, 0x846CA68B):
        x = ((x ^ (x >> 16)) * mult) & MASK64
    x = x ^ (x >> 16)
    return (x & 0xFFFFFF).double() / float(1 << 24)


def simulate(n_users: int = 1000, n_items: int = 500, n_interactions: int = 20000, *,
             popularity_bias: float = 1.0, relevance_rate: float = 0.1, affinity: float = 3.0,
             factors: int = 16, test_period: float = 0.25, mar_items: int = 10, seed: int = 0,
             chunk_users: int = 4096) -> Simulation:
    """Simulate about `n_interactions` training clicks (1K to 10M) over users x items.

    `popularity_bias` is the Zipf exponent of exposure (0: uniform, larger: more skewed);
    `relevance_rate` is the mean of gamma over all pairs; `test_period` is the test period's
    exposure volume relative to training.
    """
    if n_users < 2 or n_items < max(2, mar_items):
        raise RecsysError("simulate needs at least 2 users and more items than mar_items")
    if not 0 < relevance_rate < 1:
        raise RecsysError(f"relevance_rate must lie in (0, 1), got {relevance_rate}")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    user_f = torch.randn(n_users, factors, generator=gen) / factors**0.25
    item_f = torch.randn(n_items, factors, generator=gen) / factors**0.25
    bias = _calibrate_bias(user_f, item_f, affinity, relevance_rate, gen)
    p = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64) ** popularity_bias
    p = (p / p.sum())[torch.randperm(n_items, generator=gen)]
    activity = rng.lognormal(0.0, 0.75, n_users)
    draws = _calibrate_draws(p, activity, n_interactions / relevance_rate, n_items, rng)
    truth = Relevance(user_f, item_f, affinity, bias, seed)

    train_pairs = _clicks(truth, p, draws, gen, chunk_users)
    test_draws = np.maximum(1, np.round(draws * test_period)).astype(np.int64)
    test_pairs = _clicks(truth, p, test_draws, gen, chunk_users)
    shape = (n_users, n_items)
    train_keys = train_pairs[0] * n_items + train_pairs[1]
    fresh = ~np.isin(test_pairs[0] * n_items + test_pairs[1], train_keys)
    test_pairs = (test_pairs[0][fresh], test_pairs[1][fresh])

    user_map, item_map = IdMap(np.arange(n_users)), IdMap(np.arange(n_items))
    train = _interactions(truth, train_pairs, shape, user_map, item_map, rng, "simulated train")
    test = _interactions(truth, test_pairs, shape, user_map, item_map, rng, "simulated test")
    p_np = p.numpy()
    train_propensity = _exposure_propensity(p_np, draws, "simulated training exposure")
    return Simulation(
        user_f, item_f, affinity, bias, seed, train=train, test=test,
        unbiased_test=_uniform_test(truth, train, mar_items, rng, train_propensity),
        train_propensity=train_propensity,
        test_propensity=_exposure_propensity(p_np, test_draws, "simulated test exposure"),
        item_features=_item_features(item_f, p_np, rng),
        item_text=_item_text(item_f, rng))


def _calibrate_bias(user_f, item_f, affinity, rate, gen, sample=200_000) -> float:
    """The bias that makes mean gamma equal `rate`, by bisection on a sample of pairs."""
    u = torch.randint(len(user_f), (sample,), generator=gen)
    i = torch.randint(len(item_f), (sample,), generator=gen)
    logits = affinity * (user_f[u] * item_f[i]).sum(-1)
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if torch.sigmoid(logits + mid).mean() < rate else (lo, mid)
    return (lo + hi) / 2


def _calibrate_draws(p: torch.Tensor, activity: np.ndarray, exposures: float, n_items: int, rng,
                     sample: int = 256) -> np.ndarray:
    """Draws per user, proportional to activity, scaled so the expected number of distinct
    exposed pairs, sum_u sum_i 1 - (1 - p_i)^m_u (estimated on a user sample), is `exposures`.
    """
    users = rng.choice(len(activity), min(sample, len(activity)), replace=False)
    share = torch.from_numpy(activity[users] / activity.sum())
    log1m = torch.log1p(-p)

    def expected(scale: float) -> float:
        m = (share * scale).clamp(min=1, max=20 * n_items)
        per_user = -torch.expm1(m[:, None] * log1m[None, :]).sum(1)
        return float(per_user.mean()) * len(activity)

    if expected(1e12) < exposures:  # even near-full exposure falls short: saturate
        scale = 20.0 * n_items / share.min().item()
    else:
        lo, hi = 1.0, 1e12
        for _ in range(80):
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if expected(mid) < exposures else (lo, mid)
        scale = hi
    draws = np.round(activity / activity.sum() * scale)
    return np.clip(draws, 1, 20 * n_items).astype(np.int64)


def _clicks(truth: Relevance, p, draws, gen, chunk_users) -> tuple[np.ndarray, np.ndarray]:
    """Exposed pairs (multinomial draws with replacement, deduplicated) that are relevant."""
    n_items = len(p)
    users_out, items_out = [], []
    for start in range(0, len(draws), chunk_users):
        d = torch.from_numpy(draws[start:start + chunk_users])
        # one multinomial over all draws of the chunk, assigned to users in order
        items = torch.multinomial(p, int(d.sum()), replacement=True, generator=gen)
        users = torch.arange(start, start + len(d)).repeat_interleave(d)
        keys = torch.unique(users * n_items + items)
        u, i = (keys // n_items).numpy(), (keys % n_items).numpy()
        relevant = truth.relevance(u, i).numpy()
        users_out.append(u[relevant])
        items_out.append(i[relevant])
    return np.concatenate(users_out), np.concatenate(items_out)


def _interactions(truth: Relevance, pairs, shape, user_map, item_map, rng, source) -> Interactions:
    users, items = pairs
    gamma = truth.relevance_probability(users, items).numpy()
    # deeper feedback for more relevant pairs: cart with prob 0.4 gamma, then purchase 0.5 gamma
    cart = rng.random(len(users)) < 0.4 * gamma
    purchase = cart & (rng.random(len(users)) < 0.5 * gamma)
    levels = (1 + cart + purchase).astype(np.int8)
    ts = rng.integers(1_600_000_000, 1_700_000_000, len(users)).astype(np.float64)
    ones = np.ones(len(users), dtype=np.float32)

    def csr(values):
        m = sp.csr_matrix((values, (users, items)), shape=shape)
        m.sort_indices()
        return m

    return Interactions(csr(ones), user_map, item_map, csr(levels), csr(ts),
                        {"source": source, "pairs": len(users)}, level_names=LEVEL_NAMES)


def _uniform_test(truth: Relevance, train: Interactions, per_user: int, rng,
                  propensity: Propensity) -> CandidateSet:
    users, items = uniform_candidates(train, per_user, rng)
    gamma = truth.relevance_probability(users, items).numpy()
    theta = propensity(torch.from_numpy(users), torch.from_numpy(items)).numpy()
    return CandidateSet(users, items, truth.relevance(users, items).numpy().astype(np.float32),
                        expected_labels(gamma, theta), gamma.astype(np.float32))


def uniform_candidates(train: Interactions, per_user: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(users, items): `per_user` distinct items per user, uniformly among items the user did
    not click in training (fewer only where a user clicked nearly the whole catalogue)."""
    n_users, n_items = train.matrix.shape
    cand = np.sort(rng.integers(0, n_items, (n_users, per_user * 3)), axis=1)
    rows, cols = train.coo
    clicked = np.isin(np.arange(n_users)[:, None] * n_items + cand, rows * n_items + cols)
    dup = np.zeros_like(clicked)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    bad = clicked | dup
    # shuffle within rows (sorting made them ordered), then keep good candidates first
    perm = rng.random(cand.shape).argsort(1)
    cand, bad = np.take_along_axis(cand, perm, 1), np.take_along_axis(bad, perm, 1)
    order = np.argsort(bad, axis=1, kind="stable")[:, :per_user]
    keep = ~np.take_along_axis(bad, order, 1)
    items = np.take_along_axis(cand, order, 1)
    users = np.broadcast_to(np.arange(n_users)[:, None], items.shape)
    return users[keep], items[keep]


def _exposure_propensity(p: np.ndarray, draws: np.ndarray, rule: str) -> Propensity:
    return Propensity(item=p, user_draws=draws, rule=f"{rule}: 1 - (1 - p_i)^m_u")


def _item_features(item_f: torch.Tensor, p: np.ndarray, rng) -> pd.DataFrame:
    """Categorical side information correlated with the latent factors (so it is useful)."""
    n_items = len(item_f)
    genre = item_f[:, : len(GENRES)].argmax(1).numpy()
    second = item_f[:, len(GENRES) // 2:].argmax(1).numpy() % len(GENRES)
    tags = [f"{GENRES[a]}|{GENRES[b]}" if a != b else GENRES[a] for a, b in zip(genre, second, strict=True)]
    band = np.searchsorted(np.quantile(p, [0.5, 0.9]), p)
    return pd.DataFrame({
        "item_id": np.arange(n_items),
        "genre": [GENRES[g] for g in genre],
        "tags": tags,
        "popularity_band": np.array(["niche", "mid", "hit"])[band],
        "label": rng.integers(0, 20, n_items).astype(str),
    })


def _item_text(item_f: torch.Tensor, rng) -> pd.DataFrame:
    """Short titles whose words follow the genre, e.g. 'midnight jazz river'."""
    genre = item_f[:, : len(GENRES)].argmax(1).numpy()
    adj = rng.integers(0, len(ADJECTIVES), len(genre))
    noun = rng.integers(0, len(NOUNS), len(genre))
    titles = [f"{ADJECTIVES[a]} {GENRES[g]} {NOUNS[n]}" for a, g, n in zip(adj, genre, noun, strict=True)]
    return pd.DataFrame({"item_id": np.arange(len(genre)), "text": titles})
