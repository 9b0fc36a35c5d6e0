"""The fit template every torch model family shares.

A family declares its own hyperparameters as dataclass fields and writes what is particular
to it; the template owns the rest (device, seeds, validation carved from train, early
stopping on a ranking metric or SNIPS, refit, optimiser settings, progress, factor export):

    @register("tiny")
    @dataclass(eq=False, repr=False, kw_only=True)
    class Tiny(TorchRecommender):
        factors: Positive[int] = 32

        def build(self, train, device):
            self.sampler_ = PairSampler(train, self.batch_size or 1024, seed=self.seed,
                                        device=device)
            return Embeddings(train.n_users, train.n_items, self.factors).to(device)

        def batches(self, epoch):
            return self.sampler_

        def loss(self, users, pos, neg):
            u, i, j = self.module_.users(users), self.module_.items(pos), self.module_.items(neg)
            return bpr_loss((u * i).sum(-1), (u * j).sum(-1)).mean()

        def export(self):
            return self.module_.users.weight, self.module_.items.weight

Optional: `hooks()` (objects with `on_train_start`, `on_epoch_start`, `after_step`,
`on_epoch_end`; the family itself may define them too), `propensities(train)` (unbiased
losses: their propensities, also used to select the epoch on SNIPS recall), `train_step()`
(a separate step object, for a family whose parameter names clash with `batches`/`loss`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from recsys import distributed
from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity
from recsys.data.split import holdout
from recsys.evaluate.evaluator import drop_training_pairs
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.evaluate.validation import Validator
from recsys.models.factor import FactorModel
from recsys.models.params import Device, Fraction, NonNegative, Positive, check_with
from recsys.ranking import MAX_K
from recsys.train import EarlyStopping, Optim, Step, TrainResult, resolve_device, train_loop

log = logging.getLogger("recsys")


def _ranking_metric(value: str) -> str:
    name, _, k = value.partition("@")
    if name not in RANKING_METRICS or not k.isdigit() or int(k) <= 0:
        raise ValueError(f"expected METRIC@K with METRIC in {', '.join(RANKING_METRICS)}")
    if int(k) > MAX_K:
        raise ValueError(f"K must be at most {MAX_K}")
    return value


RankingMetric = Annotated[str, check_with(_ranking_metric)]


VALID_SCORES = 2**23  # scores per validation that `valid_users=0` aims at
VALID_USERS = (2000, 10000)  # its least and most users


def auto_valid_users(n_items: int) -> int:
    """Users sampled for validation when `valid_users=0`: about VALID_SCORES scores (each
    user is scored against the whole catalogue), within VALID_USERS, so that validation
    costs a bounded share of an epoch on large catalogues and stays a steady estimate."""
    low, high = VALID_USERS
    return int(min(high, max(low, VALID_SCORES // max(n_items, 1))))


def auto_batch_size(n_pairs: int, steps: int = 64, low: int = 128, high: int = 4096) -> int:
    """The power of two nearest below n_pairs / steps, clipped to [low, high]."""
    target = max(n_pairs // steps, 1)
    return int(min(high, max(low, 1 << (target.bit_length() - 1))))


def sqrt_scaled_lr(lr: float, batch: int, reference: int = 4096) -> float:
    """The learning rate for `batch` pairs when `lr` was chosen at `reference` pairs: grown by
    sqrt(batch / reference), never shrunk (square-root scaling, Krizhevsky, "One weird trick
    for parallelizing convolutional neural networks", 2014; Hoffer et al., NeurIPS 2017)."""
    return lr * math.sqrt(max(batch / reference, 1.0))


@dataclass(eq=False, repr=False, kw_only=True)
class TorchRecommender(FactorModel):
    """Training settings shared by every torch family (each may override a default).

    `batch_size=0` picks about 64 steps per epoch (a power of two in 128..4096; a family may allow
    more on CUDA, e.g. `mf`). Without a
    `valid` set, `valid_frac` of each user's training items is held out to pick the number
    of epochs on `valid_metric` (on a sample of `valid_users` users, after every
    `valid_every`-th epoch), or on SNIPS recall for unbiased losses; with `refit`, the model is then retrained
    on all training data for that many epochs, so no data is lost to validation. When the
    holdout leaves no validation pairs (tiny data), training runs all `epochs` without early
    stopping and says so.

    Launched as several processes (`recsys.distributed`), `fit` trains data-parallel:
    `batch_size` is the global batch, shared among the ranks; rank 0 alone validates and calls
    the `callbacks`; every rank ends with the same factors. A family whose batches carry all
    of a step's randomness and whose loss is a mean over the batch's pairs trains the
    one-process model; randomness drawn inside `loss` is drawn alike on every rank, and
    in-batch negatives come from the rank's part of the batch.
    """

    epochs: Positive[int] = 200
    batch_size: NonNegative[int] = 0
    lr: Positive[float] = 0.002
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: NonNegative[float] = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    clip_grad: NonNegative[float] = 0.0
    patience: Positive[int] = 10
    warmup: NonNegative[int] = 0
    valid_frac: Fraction = 0.1
    refit: bool = True
    valid_metric: RankingMetric = "ndcg@20"
    valid_users: NonNegative[int] = 0  # 0: auto_valid_users(n_items)
    valid_every: Positive[int] = 1
    seed: NonNegative[int] = 0
    device: Device = "auto"
    progress: bool = True

    # ---- what a family writes ---------------------------------------------------------
    def build(self, train: Interactions, device: torch.device) -> nn.Module:
        """The module to train on `train` (also set up samplers here); stored as `module_`."""
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterable[tuple]:
        raise NotImplementedError

    def loss(self, *batch) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user factors, item factors) of the trained `module_`; scores are their products."""
        raise NotImplementedError

    def hooks(self) -> Sequence[object]:
        return ()

    def propensities(self, train: Interactions) -> Propensity | None:
        """Exposure propensities for an unbiased loss (also selects on SNIPS); None otherwise."""
        return None

    def train_step(self) -> Step:
        return self

    # ---- the template -------------------------------------------------------------------
    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> TorchRecommender:
        self._start_fit(train)
        self.device_ = distributed.setup(resolve_device(self.device))
        if distributed.world().distributed:
            self.fit_info_["processes"] = distributed.world().size
        self.propensity_ = self.propensities(train)
        if self.propensity_ is not None:
            self.fit_info_["propensity"] = self.propensity_.describe()
        callbacks = list(callbacks)
        fit_part, carved = train, False
        if valid is None and self.valid_frac > 0:
            fit_part, valid = holdout(train, self.valid_frac, seed=self.seed)
            carved = True
        reason = None
        if valid is not None and not carved:
            # a pair the model trains on is masked when ranking: it could never be hit
            valid, in_train = drop_training_pairs(valid, train)
            if in_train:
                self.fit_info_["valid_pairs_in_train"] = in_train
        if valid is not None and valid.nnz == 0:
            reason = ("the validation holdout left no pairs (too few items per user)" if carved
                      else "the validation data has no pairs outside the training data")
        elif valid is not None and self.warmup >= self.epochs:
            reason = (f"warmup={self.warmup} >= epochs={self.epochs}, so no epoch can be chosen "
                      "(raise epochs or lower warmup)")
        if reason is not None:
            log.warning("%s: %s; training %d epochs without early stopping",
                        self.label, reason, self.epochs)
            self.fit_info_["early_stopping"] = f"off: {reason}"
            fit_part, valid, carved = train, None, False
        result = self._run(fit_part, valid, self.epochs, callbacks)
        self.history_ = list(result.history)
        self.fit_info_.update(best_epoch=result.best_epoch, best_valid=result.best_score,
                              epochs_run=result.epochs_run)
        if carved and self.refit:
            refit = self._run(train, None, result.best_epoch, callbacks, prefix="refit_")
            self.history_ += refit.history
        return self

    def _run(self, train: Interactions, valid: Interactions | None, epochs: int,
             callbacks: list, prefix: str = "") -> TrainResult:
        """One training session from freshly seeded weights; leaves the factors set."""
        torch.manual_seed(self.seed)
        self.lr_ = self.lr  # the rate training uses; `build` may adapt it to its batch size
        self.module_ = self.build(train, self.device_)
        stopping = None
        main, several = distributed.is_main(), distributed.world().distributed
        if valid is not None:
            validate = self._validator(train, valid) if main else None
            if several:  # validated on rank 0, the score broadcast to every rank
                validate = distributed.on_main(validate, self.device_)
            stopping = EarlyStopping(validate, self.patience, self.warmup, self.valid_every)
        optim = Optim(self.optimizer, self.lr_, self.weight_decay, self.schedule, self.clip_grad)
        result = train_loop(self.module_, self.train_step(), epochs=epochs, optim=optim,
                            stopping=stopping,
                            hooks=[*self.hooks(), *(callbacks if main else ())],
                            horizon=self.epochs, progress=self.progress,
                            desc=f"{self.label} {prefix.rstrip('_')}".strip(), prefix=prefix)
        self._export()
        return result

    def _export(self) -> None:
        users, items = self.export()
        self._set_factors(users.detach(), items.detach())

    def _validator(self, train: Interactions, valid: Interactions):
        """The selection score of the current module on `valid` (higher is better): the
        ranking metric, or SNIPS recall for unbiased losses (a biased metric would pick the
        epoch whose model is most like the exposure bias the loss corrects)."""
        with_items = np.flatnonzero(valid.user_degree > 0)
        rng = np.random.default_rng(self.seed)
        size = self.valid_users or auto_valid_users(valid.n_items)
        sample = rng.choice(with_items, min(len(with_items), size), replace=False)
        metric = self.valid_metric
        if self.propensity_ is not None:
            metric = f"recall@{metric.partition('@')[2]}"
        validator = Validator(train, valid, sample, metric, self.device_, self.propensity_)
        return lambda: validator(*self.export())
