"""Matrix factorisation in torch, trained through the shared loop with a pluggable loss."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity, item_propensity
from recsys.data.sampling import PairSampler
from recsys.data.split import holdout
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import evaluate
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.evaluate.unbiased import ips_metrics
from recsys.losses import bce_loss, bpr_loss, relmf_loss, ubpr_loss, wmf_loss
from recsys.models.base import register, register_preset
from recsys.models.factor import FactorModel
from recsys.train import resolve_device, train_loop

PAIRWISE = ("bpr", "ubpr")
POINTWISE = ("bce", "wmf", "relmf")
LOSSES = PAIRWISE + POINTWISE
UNBIASED = ("relmf", "ubpr")


def auto_batch_size(n_pairs: int, steps: int = 64, low: int = 128, high: int = 4096) -> int:
    """The power of two nearest below n_pairs / steps, clipped to [low, high]."""
    target = max(n_pairs // steps, 1)
    return int(min(high, max(low, 1 << (target.bit_length() - 1))))


class Embeddings(nn.Module):
    """User and item embedding tables; a score is their dot product."""

    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, factors)
        self.items = nn.Embedding(n_items, factors)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)


@register("mf")
class MF(FactorModel):
    """Matrix factorisation with a pluggable loss, Adam, and early stopping on held-out NDCG.

    Losses: `bpr` (pairwise, negatives avoid the user's positives); `ubpr` (unbiased BPR,
    j is any item, weighted by propensities, clamped below at -beta when beta is set);
    `bce`, `wmf` and `relmf` (pointwise: each batch holds the clicked pairs plus as many
    pairs drawn uniformly from all unobserved cells; wmf weighs those `neg_weight`; relmf
    weighs by Y/theta with theta floored at `clip`). `per_pair` picks log or squared loss;
    "auto" is squared for relmf, log otherwise: with log loss, a clicked pair's weight
    1 - 1/theta < 0 on -log(1 - s) rewards s -> 1 without bound, unless `beta` clamps each
    pair's loss at -beta (the relmf preset does); the squared loss is bounded by itself (the
    official Rel-MF code uses it). Selection on a validation split uses SNIPS-weighted recall
    for the unbiased losses.
    Propensities come from `train.propensity` or item popularity ((n_i / max n)^eta).

    `batch_size=0` picks about 64 steps per epoch (a power of two in 128..4096). Without a
    `valid` set, `valid_frac` of each user's training items is held out to pick the number
    of epochs; with `refit`, the model is then retrained on all training data for that many
    epochs, so no data is lost to validation.
    """

    def __init__(self, factors: int = 64, loss: str = "bpr", epochs: int = 200,
                 batch_size: int = 0, lr: float = 0.002, reg: float = 0.03,
                 eta: float = 0.5, clip: float = 0.0, neg_weight: float = 0.1,
                 per_pair: str = "auto", beta: float | None = None,
                 patience: int = 10, warmup: int = 0, valid_frac: float = 0.1, refit: bool = True,
                 valid_metric: str = "ndcg@20", valid_users: int = 10000, seed: int = 0,
                 device: str = "auto", progress: bool = True) -> None:
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.reg = reg
        self.eta = eta
        self.clip = clip
        self.neg_weight = neg_weight
        self.per_pair = per_pair
        self.beta = beta
        self.patience = patience
        self.warmup = warmup
        self.valid_frac = valid_frac
        self.refit = refit
        self.valid_metric = valid_metric
        self.valid_users = valid_users
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        if self.loss not in LOSSES:
            raise RecsysError(f"mf: unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.per_pair not in ("auto", "log", "square"):
            raise RecsysError(f"mf: per_pair must be auto, log or square, got {self.per_pair!r}")
        name, _, k = self.valid_metric.partition("@")
        if name not in RANKING_METRICS or not k.isdigit() or int(k) <= 0:
            raise RecsysError(f"mf: valid_metric {self.valid_metric!r} is not METRIC@K with METRIC in "
                              f"{', '.join(RANKING_METRICS)}")

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> MF:
        self._check_params()
        self._start_fit(train)
        propensity = None
        if self.loss in UNBIASED:
            propensity = train.propensity or item_propensity(train.item_popularity, self.eta)
            propensity = propensity.with_clip(max(propensity.clip, self.clip))
            self.fit_info_["propensity"] = propensity.describe()
        callbacks = list(callbacks)
        fit_part, carved = train, False
        if valid is None and self.valid_frac > 0:
            fit_part, valid = holdout(train, self.valid_frac, seed=self.seed)
            carved = True
        result = self._train(fit_part, valid, self.epochs, propensity, callbacks)
        self.fit_info_.update(best_epoch=result.best_epoch, best_valid=result.best_score,
                              epochs_run=len(result.history))
        if carved and self.refit:
            self._train(train, None, result.best_epoch, propensity, callbacks, desc="refit")
        return self

    def _batch_loss(self, module: Embeddings, sampler: PairSampler,
                    propensity: Propensity | None):
        """The loss of one batch (users, clicked items, sampled items) under `self.loss`."""

        def dot(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return (u * i).sum(-1)

        def l2(*embs: torch.Tensor) -> torch.Tensor:
            return sum(e.pow(2).sum() for e in embs) / (2 * len(embs[0]))

        per_pair_kind = self.per_pair if self.per_pair != "auto" else (
            "square" if self.loss == "relmf" else "log")

        def loss_fn(users, pos, neg):
            if self.loss in PAIRWISE:
                u, i, j = module.users(users), module.items(pos), module.items(neg)
                if self.loss == "bpr":
                    per_pair = bpr_loss(dot(u, i), dot(u, j))
                else:
                    per_pair = ubpr_loss(dot(u, i), dot(u, j), propensity(users, pos),
                                         sampler.is_positive(users, neg).float(),
                                         propensity(users, neg), beta=self.beta)
                return per_pair.mean() + self.reg * l2(u, i, j)
            nu, ni = sampler.unobserved(len(users))
            all_users, all_items = torch.cat([users, nu]), torch.cat([pos, ni])
            clicks = torch.cat([torch.ones_like(users), torch.zeros_like(nu)]).float()
            u, i = module.users(all_users), module.items(all_items)
            logits = dot(u, i)
            if self.loss == "bce":
                per_pair = bce_loss(logits, clicks, per_pair_kind)
            elif self.loss == "wmf":
                per_pair = wmf_loss(logits, clicks, self.neg_weight, per_pair_kind)
            else:
                per_pair = relmf_loss(logits, clicks, propensity(all_users, all_items),
                                      per_pair=per_pair_kind, beta=self.beta)
            return per_pair.mean() + self.reg * l2(u, i)

        return loss_fn

    def _train(self, train: Interactions, valid: Interactions | None, epochs: int,
               propensity: Propensity | None, callbacks: list, desc: str = "mf"):
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        module = Embeddings(train.n_users, train.n_items, self.factors).to(device)
        sampler = PairSampler(train, self.batch_size or auto_batch_size(train.nnz), seed=self.seed,
                              device=device, exclude_positives=self.loss == "bpr",
                              negatives=self.loss in PAIRWISE)
        valid_sample = None
        if valid is not None:
            with_items = np.flatnonzero(valid.user_degree > 0)
            rng = np.random.default_rng(self.seed)
            valid_sample = np.sort(rng.choice(with_items, min(len(with_items), self.valid_users),
                                              replace=False))

        k = int(self.valid_metric.split("@")[1])

        def validate() -> float:
            self._set_factors(module.users.weight.detach(), module.items.weight.detach())
            if propensity is not None:
                # select on a propensity-weighted (SNIPS) metric: a biased one would pick the
                # epoch whose model is most like the exposure bias the loss corrects
                return ips_metrics(self, valid, train=train, propensity=propensity, k=k,
                                   users=valid_sample)[f"snips_recall@{k}"]
            metrics = evaluate(self, valid, train=train, k=k, users=valid_sample)
            return metrics[self.valid_metric]

        result = train_loop(module, lambda: sampler, self._batch_loss(module, sampler, propensity),
                            epochs=epochs, lr=self.lr,
                            validate=validate if valid is not None else None,
                            patience=self.patience, warmup=self.warmup, callbacks=callbacks,
                            progress=self.progress, desc=desc)
        self._set_factors(module.users.weight.detach(), module.items.weight.detach())
        return result


# SNIPS validation is noisy: warm-up and a longer patience keep an early peak from ending
# training. relmf: log loss bounded below at -beta, propensities floored at 0.3 and a milder
# eta; bench/RESULTS.md has the sweep behind these values.
register_preset("relmf", "mf", loss="relmf", per_pair="log", beta=4.0, clip=0.3, eta=0.25,
                warmup=30, patience=30)
register_preset("ubpr", "mf", loss="ubpr", clip=0.1, beta=1.0, warmup=30)
