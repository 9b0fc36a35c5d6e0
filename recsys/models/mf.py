"""Matrix factorisation in torch, trained through the shared loop with a pluggable loss."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from recsys.data.interactions import Interactions
from recsys.data.sampling import PairSampler
from recsys.data.split import holdout
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import evaluate
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.losses import bpr_loss
from recsys.models.base import register
from recsys.models.factor import FactorModel
from recsys.train import resolve_device, train_loop

LOSSES = ("bpr",)


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
    """MF with BPR loss, Adam, uniform negatives and early stopping on held-out NDCG.

    `batch_size=0` picks about 64 steps per epoch (a power of two in 128..4096), so small
    and large data sets both train well with the same defaults.

    Without a `valid` set, `valid_frac` of each user's training items is held out to pick the
    number of epochs; with `refit`, the model is then retrained on all training data for
    that many epochs, so no data is lost to validation.
    """

    def __init__(self, factors: int = 64, loss: str = "bpr", epochs: int = 200,
                 batch_size: int = 0, lr: float = 0.002, reg: float = 0.03,
                 patience: int = 10, valid_frac: float = 0.1, refit: bool = True,
                 valid_metric: str = "ndcg@20", valid_users: int = 10000, seed: int = 0,
                 device: str = "auto",
                 progress: bool = True) -> None:
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.reg = reg
        self.patience = patience
        self.valid_frac = valid_frac
        self.refit = refit
        self.valid_metric = valid_metric
        self.valid_users = valid_users
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> MF:
        if self.loss not in LOSSES:
            raise RecsysError(f"mf: unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        name, _, k = self.valid_metric.partition("@")
        if name not in RANKING_METRICS or not k.isdigit() or int(k) <= 0:
            raise RecsysError(f"mf: valid_metric {self.valid_metric!r} is not METRIC@K with METRIC in "
                              f"{', '.join(RANKING_METRICS)}")
        self._start_fit(train)
        callbacks = list(callbacks)
        fit_part, carved = train, False
        if valid is None and self.valid_frac > 0:
            fit_part, valid = holdout(train, self.valid_frac, seed=self.seed)
            carved = True
        result = self._train(fit_part, valid, self.epochs, callbacks)
        self.fit_info_.update(best_epoch=result.best_epoch, best_valid=result.best_score,
                              epochs_run=len(result.history))
        if carved and self.refit:
            self._train(train, None, result.best_epoch, callbacks, desc="refit")
        return self

    def _train(self, train: Interactions, valid: Interactions | None, epochs: int,
               callbacks: list, desc: str = "mf"):
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        module = Embeddings(train.n_users, train.n_items, self.factors).to(device)
        sampler = PairSampler(train, self.batch_size or auto_batch_size(train.nnz), seed=self.seed,
                              device=device)

        def loss_fn(users, pos, neg):
            u, i, j = module.users(users), module.items(pos), module.items(neg)
            pos_s, neg_s = (u * i).sum(-1), (u * j).sum(-1)
            l2 = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / (2 * len(users))
            return bpr_loss(pos_s, neg_s) + self.reg * l2

        valid_sample = None
        if valid is not None:
            with_items = np.flatnonzero(valid.user_degree > 0)
            rng = np.random.default_rng(self.seed)
            valid_sample = np.sort(rng.choice(with_items, min(len(with_items), self.valid_users),
                                              replace=False))

        def validate() -> float:
            self._set_factors(module.users.weight.detach(), module.items.weight.detach())
            metrics = evaluate(self, valid, train=train, k=int(self.valid_metric.split("@")[1]),
                               users=valid_sample)
            return metrics[self.valid_metric]

        result = train_loop(module, lambda: sampler, loss_fn, epochs=epochs, lr=self.lr,
                            validate=validate if valid is not None else None,
                            patience=self.patience, callbacks=callbacks,
                            progress=self.progress, desc=desc)
        self._set_factors(module.users.weight.detach(), module.items.weight.detach())
        return result
