"""Matrix factorisation in torch with a pluggable loss, on the shared training template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity, item_propensity
from recsys.data.sampling import PairSampler
from recsys.losses import bce_loss, bpr_loss, relmf_loss, ubpr_loss, wmf_loss
from recsys.models.base import register, register_preset
from recsys.models.params import NonNegative, Positive, Probability
from recsys.models.space import Choice, Float, Int
from recsys.models.sparse import SparseTables
from recsys.models.torch_model import TorchRecommender, auto_batch_size, sqrt_scaled_lr
from recsys.train import StepFunctions

PAIRWISE = ("bpr", "ubpr")
UNBIASED = ("relmf", "ubpr")
CUDA_AUTO_BATCH = 32768  # the largest automatic BPR batch on CUDA (see MF.auto_batch)
Loss = Literal["bpr", "ubpr", "bce", "wmf", "relmf"]


class Embeddings(nn.Module):
    """User and item embedding tables, and optionally an item bias; a score is the dot product
    plus the item's bias. The bias is a 1-D parameter, so dynamic sparsity (which sparsifies
    2-D tables) leaves it dense. Off by default: families and benches built on the plain
    tables (the torch_model docstring's example) construct it with three arguments."""

    def __init__(self, n_users: int, n_items: int, factors: int, item_bias: bool = False) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, factors)
        self.items = nn.Embedding(n_items, factors)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def scores(self, u: torch.Tensor, i: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores [n] of n pairs from their looked-up user and item rows `u`, `i` [n, factors]
        and the item indices `items` [n]."""
        scores = (u * i).sum(-1)
        return scores if self.item_bias is None else scores + self.item_bias[items]


@register("mf")
@dataclass(eq=False, repr=False, kw_only=True)
class MF(SparseTables, TorchRecommender):
    """Matrix factorisation with a pluggable loss, trained by the shared template.

    Losses: `bpr` (pairwise, negatives avoid the user's positives); `ubpr` (unbiased BPR,
    j is any item, weighted by propensities, clamped below at -beta when beta is set);
    `bce`, `wmf` and `relmf` (pointwise: each batch holds the clicked pairs plus as many
    pairs drawn uniformly from all unobserved cells; wmf weighs those `neg_weight`; relmf
    weighs by Y/theta with theta floored at `clip`). `per_pair` picks log or squared loss;
    "auto" is squared for relmf, log otherwise: with log loss, a clicked pair's weight
    1 - 1/theta < 0 on -log(1 - s) rewards s -> 1 without bound, unless `beta` clamps each
    pair's loss at -beta (the relmf preset does); the squared loss is bounded by itself (the
    official Rel-MF code uses it). With `all_pairs`, the clicked and unobserved halves of a
    pointwise batch weigh their shares of all cells, so the loss estimates the mean over every
    cell, as Saito et al.'s semi-synthetic Rel-MF trains; otherwise the halves weigh alike (a
    click then counts cells / clicks times more than in that mean). Rel-MF's estimator is
    unbiased for the relevance loss only with all_pairs: with equal halves its minimiser is
    not gamma but w gamma / (1 + (w - 1) theta gamma), w = unobserved cells / clicks, which
    for pairs with w theta gamma >> 1 ranks by 1 / theta (against exposure).
    `reg` is an L2 penalty on the batch's embeddings (and item biases). `item_bias` adds a
    learned bias per item, as implicit's BPR has and Saito et al.'s semi-synthetic MF (user and
    global biases shift all of a user's scores alike, so they cannot change a ranking and are
    left out); it is exported as a last item-factor column matched by a user column of ones.
    `density` < 1 trains both tables sparse (dynamic sparse learning, `SparseTables`).
    Propensities come from `train.propensity` or item popularity ((n_i / max n)^eta); the
    unbiased losses select their epoch on SNIPS recall.
    """

    factors: Positive[int] = 64
    loss: Loss = "bpr"
    reg: NonNegative[float] = 0.03
    eta: NonNegative[float] = 0.5
    clip: Probability = 0.0
    neg_weight: NonNegative[float] = 0.1
    per_pair: Literal["auto", "log", "square"] = "auto"
    beta: NonNegative[float] | None = None
    all_pairs: bool = False
    item_bias: bool = False

    test_params: ClassVar[dict] = {"factors": 16, "epochs": 15, "lr": 0.01}
    # what `recsys tune` searches (the loss-specific parameters only for their losses)
    search_space: ClassVar[dict] = {
        "factors": Int(8, 256, log=True), "lr": Float(3e-4, 3e-2, log=True),
        "reg": Float(1e-4, 0.3, log=True),
        "neg_weight": Float(1e-2, 1.0, log=True, when={"loss": ("wmf",)}),
        "eta": Float(0.0, 1.0, when={"loss": UNBIASED}),  # eta 0 turns reweighting off
        "clip": Float(1e-2, 0.5, log=True, when={"loss": UNBIASED}),
        "beta": Float(0.5, 8.0, log=True, when={"loss": UNBIASED}),
        "item_bias": Choice((False, True)),
    }

    @property
    def fixed_user_columns(self) -> int:
        return int(self.item_bias)

    def propensities(self, train: Interactions) -> Propensity | None:
        if self.loss not in UNBIASED:
            return None
        propensity = train.propensity or item_propensity(train.item_popularity, self.eta)
        return propensity.with_clip(max(propensity.clip, self.clip))

    def build(self, train: Interactions, device: torch.device) -> nn.Module:
        module = Embeddings(train.n_users, train.n_items, self.factors, self.item_bias).to(device)
        self.click_share_ = train.nnz / (train.n_users * train.n_items)
        batch = self.batch_size or self.auto_batch(train, device)
        if not self.batch_size:
            self.lr_ = sqrt_scaled_lr(self.lr, batch)
        self.sampler_ = PairSampler(train, batch, seed=self.seed, device=device,
                                    exclude_positives=self.loss == "bpr",
                                    negatives=self.loss in PAIRWISE)
        return module

    def auto_batch(self, train: Interactions, device: torch.device) -> int:
        """About 64 steps per epoch, at most 4096 pairs; on CUDA at most 32768 for BPR, with
        `lr` grown by sqrt(batch / 4096): on a 1M-pair power-law log that trained 3.4x faster
        on an H200 at the same NDCG@20 (0.162 vs 0.159, bench/RESULTS.md "Large batches");
        other losses keep 4096 (not validated at larger batches)."""
        large = device.type == "cuda" and self.loss == "bpr"
        return auto_batch_size(train.nnz, high=CUDA_AUTO_BATCH if large else 4096)

    def train_step(self) -> StepFunctions:
        # MF's `loss` names the loss function (a parameter), so the step is a separate object
        return StepFunctions(self._batches, self._batch_loss)

    def _batches(self, epoch: int):
        """Pairwise: (users, clicked items, sampled items); pointwise: (users, clicked items,
        users and items of as many unobserved cells), drawn with the batch so that data-parallel
        ranks share them out like the rest of the batch."""
        if self.loss in PAIRWISE:
            return self.sampler_
        return ((users, pos, *self.sampler_.unobserved(len(users)))
                for users, pos, _ in self.sampler_)

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.module_.users.weight, self.module_.items.weight
        if self.module_.item_bias is None:
            return users, items
        ones = torch.ones(len(users), 1, dtype=users.dtype, device=users.device)
        return torch.cat([users, ones], 1), torch.cat([items, self.module_.item_bias[:, None]], 1)

    def _batch_loss(self, users: torch.Tensor, pos: torch.Tensor, *drawn: torch.Tensor):
        """The loss of one batch (users, clicked items, then the sampled items, or the users
        and items of unobserved cells) under `self.loss`."""
        module, sampler, propensity = self.module_, self.sampler_, self.propensity_
        if self.loss in PAIRWISE:
            (neg,) = drawn
            u, i, j = module.users(users), module.items(pos), module.items(neg)
            s_i, s_j = module.scores(u, i, pos), module.scores(u, j, neg)
            if self.loss == "bpr":
                per_pair = bpr_loss(s_i, s_j)
            else:
                per_pair = ubpr_loss(s_i, s_j, propensity(users, pos),
                                     sampler.is_positive(users, neg).float(),
                                     propensity(users, neg), beta=self.beta)
            return per_pair.mean() + self.reg * _l2(u, i, j, *self._biases(pos, neg))
        nu, ni = drawn
        all_users, all_items = torch.cat([users, nu]), torch.cat([pos, ni])
        clicks = torch.cat([torch.ones_like(users), torch.zeros_like(nu)]).float()
        u, i = module.users(all_users), module.items(all_items)
        logits = module.scores(u, i, all_items)
        kind = self.per_pair if self.per_pair != "auto" else (
            "square" if self.loss == "relmf" else "log")
        if self.loss == "bce":
            per_pair = bce_loss(logits, clicks, kind)
        elif self.loss == "wmf":
            per_pair = wmf_loss(logits, clicks, self.neg_weight, kind)
        else:
            per_pair = relmf_loss(logits, clicks, propensity(all_users, all_items),
                                  per_pair=kind, beta=self.beta)
        if self.all_pairs:  # each half by its share of all cells: the mean over every cell
            share = torch.full_like(per_pair, 2 * self.click_share_)
            share[len(users):] = 2 * (1 - self.click_share_)
            per_pair = per_pair * share
        return per_pair.mean() + self.reg * _l2(u, i, *self._biases(all_items))

    def _biases(self, *items: torch.Tensor) -> list[torch.Tensor]:
        """The item biases of each index tensor in `items` (none without `item_bias`), for
        the L2 penalty."""
        bias = self.module_.item_bias
        return [] if bias is None else [bias[i] for i in items]


def _l2(first: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    """Half the sum of squares of the tensors, per pair of the batch (`first`'s rows)."""
    return sum(e.pow(2).sum() for e in (first, *rest)) / (2 * len(first))


# SNIPS validation is noisy: warm-up and a longer patience keep an early peak from ending
# training. relmf: log loss bounded below at -beta, propensities floored at 0.3 and a milder
# eta; bench/RESULTS.md has the sweep behind these values.
register_preset("relmf", "mf", loss="relmf", per_pair="log", beta=4.0, clip=0.3, eta=0.25,
                warmup=30, patience=30)
register_preset("ubpr", "mf", loss="ubpr", clip=0.1, beta=1.0, warmup=30)
