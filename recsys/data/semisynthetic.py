"""Semi-synthetic MNAR clicks from a rating data set, built the way Saito et al. (WSDM 2020,
Section 5.1) built theirs from MovieLens-100K:

1. relevance gamma = sigmoid(clip(R_hat, 1, 5) - eps), R_hat from a matrix factorisation fit
   to the observed ratings (squared error);
2. exposure theta = sigmoid(logistic MF fit to the rated / not-rated indicator of every pair)
   raised to a power p (p > 1 skews exposure further toward what users already rate);
3. R ~ Bern(gamma), O ~ Bern(theta), training clicks Y = O * R over the full matrix.

The test set is missing-at-random, like Yahoo! R3 and Coat: `mar_items` items per user drawn
uniformly among those the user did not click, labelled with R. Both fits have global, user
and item biases beside 20 factors (the original fits factors only, for 300 mini-batches, so
its R_hat hardly varies off the rated pairs; biases give unrated pairs a meaningful R_hat),
and are regularised to generalise: the exposure fit puts theta at 0.37 on rated pairs and
0.04 elsewhere on MovieLens-100K, rather than memorising which pairs are rated. They are
full-batch Adam on dense users x items tensors: meant for MovieLens-100K/1M sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity
from recsys.data.simulate import CandidateSet, expected_labels, uniform_candidates
from recsys.errors import RecsysError


@dataclass(frozen=True)
class SemiSynthetic:
    train: Interactions  # clicks Y = O * R (binary), on the ratings' id maps
    unbiased_test: CandidateSet  # uniformly drawn non-clicked items per user, labelled R
    propensity: Propensity  # the true exposure probabilities theta^p, per pair
    relevance: np.ndarray  # gamma, users x items


def _biased_mf(n_users: int, n_items: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n_users, dim, generator=gen) * 0.1, torch.randn(n_items, dim, generator=gen) * 0.1,
              torch.zeros(n_users), torch.zeros(n_items), torch.zeros(())]
    for p in params:
        p.requires_grad_(True)
    return params


def _fit(params, loss_fn, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()


def relevance_probability(ratings: Interactions, *, eps: float = 5.0, dim: int = 20, reg: float = 0.1,
                          steps: int = 300, lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """gamma (users x items, float64) from the ratings stored as `ratings.matrix` weights."""
    rows, cols = ratings.coo
    if len(rows) == 0:
        raise RecsysError("relevance_probability needs ratings")
    r = torch.from_numpy(ratings.matrix.tocoo().data.astype(np.float32))
    u_idx, i_idx = torch.from_numpy(rows), torch.from_numpy(cols)
    users, items, bu, bi, mu = params = _biased_mf(ratings.n_users, ratings.n_items, dim, seed)
    with torch.no_grad():
        mu.fill_(float(r.mean()))

    def loss():
        pred = mu + bu[u_idx] + bi[i_idx] + (users[u_idx] * items[i_idx]).sum(1)
        penalty = users[u_idx].pow(2).sum(1) + items[i_idx].pow(2).sum(1) + bu[u_idx] ** 2 + bi[i_idx] ** 2
        return ((pred - r) ** 2 + reg * penalty).mean()

    _fit(params, loss, steps, lr)
    with torch.no_grad():
        r_hat = mu + bu[:, None] + bi[None, :] + users @ items.T
    return torch.sigmoid(r_hat.clamp(1.0, 5.0) - eps).double().numpy()


def exposure_probability(ratings: Interactions, *, dim: int = 20, reg: float = 0.01, steps: int = 300,
                         lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """sigmoid of a logistic MF fit to which pairs are rated (users x items, float64)."""
    observed = torch.from_numpy((ratings.matrix != 0).toarray().astype(np.float32))
    users, items, bu, bi, mu = params = _biased_mf(ratings.n_users, ratings.n_items, dim, seed)

    def loss():
        logits = mu + bu[:, None] + bi[None, :] + users @ items.T
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, observed)
        return bce + reg * (users.pow(2).sum(1).mean() + items.pow(2).sum(1).mean())

    _fit(params, loss, steps, lr)
    with torch.no_grad():
        return torch.sigmoid(mu + bu[:, None] + bi[None, :] + users @ items.T).double().numpy()


def semisynthetic(ratings: Interactions, power: float, *, relevance: np.ndarray | None = None,
                  exposure: np.ndarray | None = None, mar_items: int = 20, seed: int = 0) -> SemiSynthetic:
    """Draw R, O and the clicks Y = O * R with theta = exposure^power; `relevance` (gamma) and
    `exposure` default to fits on `ratings` (pass them to draw several seeds from one fit)."""
    if power <= 0:
        raise RecsysError(f"the exposure power must be positive, got {power}")
    gamma = relevance_probability(ratings) if relevance is None else relevance
    theta = (exposure_probability(ratings) if exposure is None else exposure) ** power
    shape = (ratings.n_users, ratings.n_items)
    if gamma.shape != shape or theta.shape != shape:
        raise RecsysError(f"relevance {gamma.shape} and exposure {theta.shape} must be users x items {shape}")
    rng = np.random.default_rng(seed)
    relevant = rng.random(shape) < gamma
    clicks = relevant & (rng.random(shape) < theta)
    matrix = sp.csr_matrix(clicks.astype(np.float32))
    matrix.sort_indices()
    train = Interactions(matrix, ratings.user_map, ratings.item_map,
                         meta={"source": f"semi-synthetic clicks (power {power}, seed {seed})",
                               "pairs": int(matrix.nnz)})
    users, items = uniform_candidates(train, mar_items, rng)
    test = CandidateSet(users, items, relevant[users, items].astype(np.float32),
                        expected_labels(gamma[users, items], theta[users, items]),
                        gamma[users, items].astype(np.float32))
    propensity = Propensity(pair=theta.astype(np.float32), rule=f"true exposure theta^{power}")
    return SemiSynthetic(train, test, propensity, gamma)
