"""GNOLR: graded implicit feedback (view < cart < purchase) learned in one embedding space.

Zhang et al., "Embed Progressive Implicit Preference in Unified Space for Deep Collaborative
Filtering" (KDD 2025); papers.md section 4. Each tower has one head per level; with unit head
vectors u_k, v_k and c_k = cos(u_k, v_k), the cumulative logits are

    z_k = sum_{j<=k} S_j c_j,    P(y >= k) = sigmoid(z_k - a_k),

with a_k = -logit(p_k) from the base rate p_k of level >= k among the training examples
(the clicked pairs and `negatives` sampled items per click). Retrieval for level g ranks by
z_g = <[S_1 u_1; ...; S_g u_g], [v_1; ...; v_g]>: one inner product over concatenated heads,
so the model exports factors (the deepest level by default).

P(y >= k+1) <= P(y >= k) for every pair needs S_{k+1} < a_{k+1} - a_k; the official code
does not enforce it and its ln(P_k - P_{k+1}) turns NaN when it fails. Here the thresholds
are built as a_{k+1} = a_k + S_{k+1} + MIN_GAP + softplus(r_k), ordered for any parameter
values, and the loss works in log space (`recsys.losses.ordinal`). Where a level's base-rate
gap is narrower than S, that head's scale is lowered to fit inside the gap (fit_info says so).

Objectives (`objective`), the last two as baselines in one code path:
- `nested`: GNOLR's nested loss, the sum of ordinal losses over the ladders truncated at
  each level (the paper's method);
- `ordinal`: the plain cumulative-link loss over the full ladder (the paper's "no nesting");
- `multitask`: independent heads, P(y >= k) = sigmoid(S c_k - a_k), a sum of per-level
  binary cross-entropies (shared embeddings, separate heads);
- `binary`: one head, binary cross-entropy on y >= `grade` (one model per level).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.interactions import Interactions
from recsys.data.sampling import PairSampler
from recsys.errors import RecsysError
from recsys.losses.ordinal import MIN_GAP, nested_ordinal_loss, ordered_thresholds, ordinal_nll
from recsys.models.base import register
from recsys.models.params import Level, Positive
from recsys.models.space import Float, Int
from recsys.models.torch_model import TorchRecommender, auto_batch_size

log = logging.getLogger("recsys")

Objective = Literal["nested", "ordinal", "multitask", "binary"]
CUMULATIVE = ("nested", "ordinal")


def _softplus_inverse(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class Thresholds(nn.Module):
    """a_1 < a_2 < ... < a_L with a_{k+1} - a_k >= min_steps_k + MIN_GAP, by construction.

    Starts at `init` where that allows (else at the smallest allowed step); a learned first
    threshold and free steps when `learn`, fixed buffers otherwise.
    """

    def __init__(self, init: torch.Tensor, min_steps: torch.Tensor, learn: bool) -> None:
        super().__init__()
        free = (init.diff() - min_steps - MIN_GAP).clamp(min=MIN_GAP)
        first, raw = init[0].clone(), _softplus_inverse(free)
        if learn:
            self.first, self.raw = nn.Parameter(first), nn.Parameter(raw)
        else:
            self.register_buffer("first", first)
            self.register_buffer("raw", raw)
        self.register_buffer("min_steps", min_steps.clone())

    def forward(self) -> torch.Tensor:
        return ordered_thresholds(self.first, self.raw, self.min_steps)


class IdTower(nn.Module):
    """Ids -> `width` outputs: an embedding table, or with `hidden` layers an embedding of
    hidden[0] through a LeakyReLU MLP (the paper's towers), so that heads share a bottom."""

    def __init__(self, n_ids: int, width: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_ids, hidden[0] if hidden else width)
        nn.init.normal_(self.embedding.weight, std=0.1)
        layers: list[nn.Module] = []
        sizes = [*hidden, width]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.LeakyReLU(), nn.Linear(a, b)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(self.embedding.weight if ids is None else self.embedding(ids))


class GradeTowers(nn.Module):
    """User and item towers with `heads` unit-norm heads of `factors` each (ids only)."""

    def __init__(self, n_users: int, n_items: int, heads: int, factors: int,
                 hidden: tuple[int, ...], scales: torch.Tensor, thresholds: Thresholds) -> None:
        super().__init__()
        self.heads, self.factors = heads, factors
        self.users = IdTower(n_users, heads * factors, hidden)
        self.items = IdTower(n_items, heads * factors, hidden)
        self.register_buffer("scales", scales)
        self.thresholds = thresholds

    def user_heads(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """[n, heads, factors]: S_k u_k / |u_k|."""
        w = self.users(users)
        return F.normalize(w.view(len(w), self.heads, self.factors), dim=-1) * self.scales[:, None]

    def item_heads(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """[n, heads, factors]: v_k / |v_k|."""
        w = self.items(items)
        return F.normalize(w.view(len(w), self.heads, self.factors), dim=-1)

    def head_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[batch, heads]: S_k cos(u_k, v_k) for aligned (user, item) pairs."""
        return (self.user_heads(users) * self.item_heads(items)).sum(-1)


@register("gnolr")
@dataclass(eq=False, repr=False, kw_only=True)
class GNOLR(TorchRecommender):
    """Graded feedback in one embedding space (GNOLR, KDD 2025); see the module docstring.

    Trains on `train.levels` (1..L; every pair without levels counts as level 1). Each epoch
    visits every clicked pair once, with `negatives` items the user did not click as level-0
    examples. `factors` is the width of each head; `hidden` puts an MLP below the heads of
    each tower (e.g. 128,64: an id embedding of 128, then 64, then the heads), shared by the
    heads, as the paper's towers. `scale` is S (the paper: 2 to 4); `learn_thresholds` frees
    the a_k from their base rates (kept ordered). `grade` is the level a `binary` model learns
    and the default ranking serves: a level name or its 1-based number (0: the deepest).
    Scores rank by the deepest level; `score(..., grade=g)` ranks by level g and
    `probabilities=True` gives P(y >= k). `level_names_` (saved with the model) names the
    levels, weakest first.
    """

    factors: Positive[int] = 32
    hidden: tuple[Positive[int], ...] = ()
    scale: Positive[float] = 4.0
    objective: Objective = "nested"
    grade: Level = 0
    negatives: Positive[int] = 4
    learn_thresholds: bool = False
    lr: Positive[float] = 0.01

    uses: ClassVar[frozenset[str]] = frozenset({"levels"})
    _ranking_level: ClassVar[int | str | None] = None  # the level `at_level` chose
    state_rows: ClassVar[dict[str, str]] = {"user_heads": "users", "item_factors": "items"}
    sparse_state: ClassVar[frozenset[str]] = frozenset()  # its factors are read dense, per head
    test_params: ClassVar[dict] = {"factors": 8, "epochs": 10}
    search_space: ClassVar[dict] = {  # what `recsys tune` searches
        "factors": Int(8, 128, log=True), "lr": Float(1e-3, 3e-2, log=True),
        "scale": Float(1.0, 16.0, log=True), "negatives": Int(1, 16, log=True),
    }

    # ---- training -------------------------------------------------------------------------
    def build(self, train: Interactions, device: torch.device) -> nn.Module:
        keys, levels = _pair_levels(train)
        n_levels = len(self.level_names_)
        self.keys_, self.pair_levels_ = keys.to(device), levels.to(device)
        self.sampler_ = PairSampler(train, self.batch_size or auto_batch_size(train.nnz),
                                    seed=self.seed, device=device, negatives=False)
        counts = np.bincount(levels.numpy(), minlength=n_levels + 1)[1:]
        at_least = np.cumsum(counts[::-1])[::-1]
        examples = train.nnz * (1 + self.negatives)
        if self.objective == "binary":
            at_least = at_least[[self.target_ - 1]]
        # base rates with add-one smoothing: a level without training pairs stays finite
        base = (at_least + 1.0) / (examples + 2.0)
        init = torch.from_numpy(np.log((1 - base) / base)).float()
        heads = len(init)
        scales = torch.full((heads,), float(self.scale))
        min_steps = torch.zeros(heads - 1)
        if self.objective in CUMULATIVE:
            # S_{k+1} must stay below a_{k+1} - a_k: lower the scale of heads that would not
            gaps = init.diff()
            fit = (gaps - 2 * MIN_GAP).clamp(min=0)
            scales[1:] = torch.minimum(scales[1:], fit)
            min_steps = scales[1:]
            lowered = {self.level_names_[k + 1]: round(float(s), 4)
                       for k, s in enumerate(scales[1:]) if s < self.scale}
            if lowered:
                if "scale_lowered" not in self.fit_info_:  # once a fit, not again for its refit
                    log.info("gnolr: scale lowered to fit the base-rate gaps of levels %s", lowered)
                self.fit_info_["scale_lowered"] = lowered
        self.fit_info_["base_rates"] = [round(float(b), 6) for b in base]
        thresholds = Thresholds(init, min_steps, self.learn_thresholds)
        return GradeTowers(train.n_users, train.n_items, heads, self.factors, self.hidden,
                           scales, thresholds).to(device)

    def batches(self, epoch: int):
        """(users, clicked items, [batch, negatives] sampled items): the negatives are drawn
        with the batch, so that data-parallel ranks share them out like the rest of it."""
        for users, items, _ in self.sampler_:
            drawn = self.sampler_.negatives(users.repeat(self.negatives))
            yield users, items, drawn.view(self.negatives, len(users)).T

    def loss(self, users: torch.Tensor, items: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.keys_, users * self.sampler_.n_items + items)
        labels = self.pair_levels_[pos]
        neg_users = users.repeat(self.negatives)
        neg_items = drawn.T.reshape(-1)  # in the order of neg_users
        users, items = torch.cat([users, neg_users]), torch.cat([items, neg_items])
        labels = torch.cat([labels, torch.zeros_like(neg_users)])
        eta = self._logits(self.module_.head_logits(users, items), self.module_.thresholds())
        if self.objective == "nested":
            return nested_ordinal_loss(eta, labels).mean()
        if self.objective == "ordinal":
            return ordinal_nll(eta, labels).mean()
        if self.objective == "binary":
            labels = (labels >= self.target_)[:, None]
        else:
            labels = labels[:, None] >= torch.arange(1, eta.shape[1] + 1, device=eta.device)
        return F.binary_cross_entropy_with_logits(eta, labels.float(), reduction="none").sum(
            -1).mean()

    def _logits(self, head_logits: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
        """eta_k = logit P(y >= k) from per-head logits [..., heads]."""
        z = torch.cumsum(head_logits, -1) if self.objective in CUMULATIVE else head_logits
        return z - thresholds

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks=()) -> GNOLR:
        names = train.level_names or ("1",)
        if self.grade not in (0, "0") and self.objective != "binary":
            # the other objectives learn every level; `grade` would change nothing
            raise RecsysError(f"model 'gnolr': parameter grade={self.grade!r} applies to "
                              f"objective=binary only; a {self.objective} model ranks any level "
                              "when asked (recommend --grade, at_level)")
        self._target(names)  # an unknown level fails here, before any work
        self.level_names_ = names
        super().fit(train, valid=valid, callbacks=callbacks)
        with torch.no_grad():
            self.user_heads_ = self.module_.user_heads().flatten(1).detach()
            self.thresholds_ = self.module_.thresholds().detach()
        return self

    def _validator(self, train: Interactions, valid: Interactions):
        """Select the epoch on the level the default ranking serves: the validation pairs of
        that level or above (all of them when none is that deep)."""
        if valid.levels is not None:
            rows, cols = valid.coo
            deep = valid.levels.data >= self.target_
            if deep.any():
                valid = valid.with_pairs(rows, cols, deep)
        return super()._validator(train, valid)

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors ranking by the default level: the deepest (or a binary model's own)."""
        m = self.module_
        users = m.user_heads()
        users = users * self._mix(m.heads, users.device)[-1][None, :, None]
        return users.flatten(1), m.item_heads().flatten(1)

    # ---- levels, scores and probabilities -----------------------------------------------
    @property
    def target_(self) -> int:
        """The level the last head (the default ranking) stands for, 1-based."""
        return self._target(self.level_names_)

    def _target(self, names: tuple[str, ...]) -> int:
        """`grade` as a 1-based level of `names` (0: the deepest); an error naming the levels."""
        grade = self.grade
        if isinstance(grade, str) and not grade.isdigit():
            if grade not in names:
                raise RecsysError(f"model 'gnolr': parameter grade={grade!r}: not a level of the "
                                  f"data ({'<'.join(names)})")
            return names.index(grade) + 1
        if int(grade) > len(names):
            raise RecsysError(f"model 'gnolr': parameter grade={grade}: the data has "
                              f"{len(names)} levels ({'<'.join(names)})")
        return int(grade) or len(names)

    def _mix(self, heads: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[levels, heads]: which heads' logits add up to each level's logit."""
        ones = torch.ones(heads, heads, device=device)
        return torch.tril(ones) if self.objective in CUMULATIVE else torch.eye(heads, device=device)

    def _head_of(self, grade: int | str | None) -> int:
        """The 0-based row of `_mix` for a level given by name or 1-based number."""
        self._check_fitted()
        names = self.level_names_
        if grade is None:
            return len(self.thresholds_) - 1
        if isinstance(grade, str) and not grade.isdigit():
            if grade not in names:
                raise RecsysError(f"unknown level {grade!r}; levels: {'<'.join(names)}")
            grade = names.index(grade) + 1
        grade = int(grade)
        if self.objective == "binary":
            if grade != self.target_:
                raise RecsysError(f"this binary gnolr model ranks level "
                                  f"{names[self.target_ - 1]!r} only, not level {grade}")
            return 0
        if not 1 <= grade <= len(names):
            raise RecsysError(f"level {grade} outside 1..{len(names)} ({'<'.join(names)})")
        return grade - 1

    def user_factors(self, grade: int | str | None = None) -> torch.Tensor:
        """User factors whose product with `item_factors()` ranks by level `grade` (a name or
        1-based number; default: the model's ranking level, the deepest unless `at_level`
        chose another): [n_users, heads * factors]."""
        row = self._head_of(grade)
        if grade is None:
            return self.user_factors_
        heads = len(self.thresholds_)
        mask = self._mix(heads, self.user_heads_.device)[row]
        return (self.user_heads_.view(len(self.user_heads_), heads, -1) * mask[:, None]).flatten(1)

    def at_level(self, grade: int | str | None) -> GNOLR:
        """This model ranking by level `grade` by default (a name or 1-based number; None: the
        deepest): a copy sharing the weights, whose `user_factors()` serve that level, so the
        usual factor ranking (evaluation, batch jobs, serving, new users) ranks by it."""
        view = copy.copy(self)
        view.user_factors_ = self.user_factors(grade)
        view._ranking_level = grade
        return view

    def user_vectors(self, features=None, history=None) -> torch.Tensor:
        """New users folded in (least squares, `FactorModel`) against the item factors of the
        heads the ranking level sums, so their vectors rank by that level as known users'
        factors do (the other heads' columns are 0)."""
        heads = len(self.thresholds_)
        mix = self._mix(heads)[self._head_of(self._ranking_level)].to(self.item_factors_.device)
        masked = copy.copy(self)
        masked.item_factors_ = (self.item_factors_.view(len(self.item_factors_), heads, -1)
                                * mix[:, None]).flatten(1)
        return super(GNOLR, masked).user_vectors(features, history)

    def score(self, users: np.ndarray, items: np.ndarray | None = None, *,
              grade: int | str | None = None, probabilities: bool = False) -> torch.Tensor:
        """[len(users), n_items or len(items)] logits z_g of level `grade` (default the
        deepest); with `probabilities`, P(y >= grade), or for `grade=None` every level's
        P(y >= k) as [len(users), n_items, levels]."""
        if not probabilities or grade is not None:
            z = self._product(self.user_factors(grade), users, items)
            if not probabilities:
                return z
            return torch.sigmoid(z - self.thresholds_[self._head_of(grade)])
        levels = [self.score(users, items, grade=g, probabilities=True)
                  for g in self._grades()]
        return torch.stack(levels, -1)

    def _grades(self) -> list[int]:
        return [self.target_] if self.objective == "binary" else list(
            range(1, len(self.level_names_) + 1))

    def _product(self, user_factors: torch.Tensor, users, items) -> torch.Tensor:
        device = user_factors.device
        u = user_factors[torch.as_tensor(np.asarray(users), dtype=torch.long, device=device)]
        v = self.item_factors_ if items is None else self.item_factors_[
            torch.as_tensor(np.asarray(items), dtype=torch.long, device=device)]
        return u @ v.T

    # ---- persistence ----------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_heads": self.user_heads_, "item_factors": self.item_factors_,
                "thresholds": self.thresholds_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.user_heads_ = state["user_heads"].float()
        self.thresholds_ = state["thresholds"].float()
        heads = len(self.thresholds_)
        mask = self._mix(heads, self.user_heads_.device)[-1]
        users = (self.user_heads_.view(len(self.user_heads_), heads, -1) * mask[:, None])
        self._set_factors(users.flatten(1), state["item_factors"])

    def _extras(self) -> dict:
        return {"level_names": list(self.level_names_)}

    def _load_extras(self, extras: dict) -> None:
        self.level_names_ = tuple(extras["level_names"])


def _pair_levels(train: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted keys user * n_items + item, their levels) of the stored pairs; level 1 for
    every pair of data without levels."""
    matrix = train.levels if train.levels is not None else train.matrix
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = torch.from_numpy(rows * matrix.shape[1] + matrix.indices)
    levels = (torch.from_numpy(matrix.data.astype(np.int64)) if train.levels is not None
              else torch.ones(len(keys), dtype=torch.int64))
    order = torch.argsort(keys)
    return keys[order], levels[order]

