"""One training loop for every torch model: optimiser settings, named loss parts, hooks, early
stopping and progress.

A *step object* says what one epoch is: `batches(epoch)` yields tuples and `loss(*batch)`
returns a scalar tensor or a dict of named scalar parts (summed into the total). Each part is
averaged per epoch, shown on the progress bar, kept in the history and passed to the hooks
under its own name. Hooks are objects with any of the optional methods

    on_optimizer(optimizer)   on_train_start()
    on_epoch_start(epoch)     after_step(step)
    on_epoch_end(epoch, logs)

(e.g. resampling graph views each epoch, re-masking weights and optimiser moments after each
step, logging to MLflow); `on_optimizer` receives the optimiser once it is built, before
`on_train_start`. The step object itself may have them too. Losses are accumulated on the
device: nothing waits for the accelerator until the epoch ends.

The decision to keep or stop lives in `EarlyStopping` alone. Under data-parallel training
(`recsys.distributed`: launched as several processes) each rank computes the loss on its part
of every global batch under DistributedDataParallel, the logged losses are averaged over the
ranks, and only rank 0 needs to validate: a `validate` that computes the score there and
broadcasts it (`distributed.on_main`) keeps every rank's bookkeeping (best epoch, kept weights
of its own replica) identical, and rank 0's stop decision is broadcast too. One process takes
none of these paths.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from recsys import distributed
from recsys.errors import RecsysError

HOOKS = ("on_optimizer", "on_train_start", "on_epoch_start", "after_step", "on_epoch_end")


class Step(Protocol):
    """What one epoch of training is, for `train_loop`."""

    def batches(self, epoch: int) -> Iterable[tuple]: ...

    def loss(self, *batch: Any) -> torch.Tensor | dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class StepFunctions:
    """A step object made of two functions."""

    batches: Callable[[int], Iterable[tuple]]
    loss: Callable[..., torch.Tensor | dict[str, torch.Tensor]]


class Callback(Protocol):
    """Receives one call per epoch, e.g. to log metrics to MLflow."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class Optim:
    """Optimiser settings. `clip_grad` > 0 clips the gradients' global L2 norm to it; the cosine
    schedule decays the learning rate per epoch to 0 at epoch `horizon` (the configured epoch
    count, so a refit for fewer epochs follows the same rates as the selection run)."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 0.002
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    clip_grad: float = 0.0

    def build(self, params: list[torch.nn.Parameter], horizon: int):
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.name]
        optimizer = kind(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = None
        if self.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, horizon) / horizon)))
        return optimizer, scheduler


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float | None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise RecsysError(f"device {device!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RecsysError(f"device {str(device)!r} requested but no CUDA device is available")
        if device.index is not None and device.index >= count:
            raise RecsysError(f"device {str(device)!r} requested but there are only {count} "
                              "CUDA devices")
    return device


class EarlyStopping:
    """Validates after every `every`-th epoch (higher is better), keeps the best epoch's
    weights, and says when to stop: after `patience` epochs without improvement. The first
    `warmup` epochs are validated and logged but cannot be chosen (an early, transient peak of
    a noisy validation metric would otherwise end training)."""

    def __init__(self, validate: Callable[[], float], patience: int = 10, warmup: int = 0,
                 every: int = 1) -> None:
        self.validate, self.patience, self.warmup, self.every = validate, patience, warmup, every
        self.best_epoch, self.best_score, self.best_state = 0, None, None

    def update(self, epoch: int, module: torch.nn.Module, logs: dict[str, float]) -> bool:
        """Validate `module` after `epoch`, record the score in `logs`; True means stop."""
        if epoch % self.every:
            return False
        module.eval()
        with torch.no_grad():
            logs["valid"] = score = float(self.validate())
        if epoch > self.warmup and (self.best_score is None or score > self.best_score):
            self.best_epoch, self.best_score = epoch, score
            self._keep(module.state_dict())
        last_gain = self.best_epoch if self.best_score is not None else self.warmup
        return epoch > self.warmup and epoch - last_gain >= self.patience

    def _keep(self, state: dict[str, torch.Tensor]) -> None:
        """A copy of `state`, written into the previous best's tensors when their shapes
        match (no fresh allocation per improvement)."""
        best = self.best_state
        if best is not None and best.keys() == state.keys() and all(
                best[k].shape == v.shape and best[k].dtype == v.dtype
                and best[k].device == v.device for k, v in state.items()):
            for k, v in state.items():
                best[k].copy_(v.detach())
        else:
            self.best_state = {k: v.detach().clone() for k, v in state.items()}

    def restore(self, module: torch.nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


def train_loop(
    module: torch.nn.Module,
    step: Step,
    *,
    epochs: int,
    optim: Optim = Optim(),
    stopping: EarlyStopping | None = None,
    hooks: Sequence[object] = (),
    horizon: int | None = None,
    progress: bool = True,
    desc: str = "train",
    prefix: str = "",
) -> TrainResult:
    """Train `module` for up to `epochs` epochs of `step`; returns the chosen epoch and history.

    With `stopping`, the best validated epoch's weights are restored at the end; without,
    the last epoch is the result. Logged keys (`loss`, each loss part, `seconds`, `valid`)
    carry `prefix` (e.g. "refit_"), so a second run logs apart from the first.
    Raises RecsysError when the loss becomes NaN or infinite.
    """
    if epochs <= 0:
        raise RecsysError(f"epochs must be positive, got {epochs}")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer, scheduler = optim.build(params, horizon or epochs)
    world = distributed.world()
    compute = _ShardedLoss(module, step, world) if world.distributed else step.loss
    listeners = [h for h in (step, *hooks) if h is not None]
    calls = {name: [getattr(h, name) for h in listeners if callable(getattr(h, name, None))]
             for name in HOOKS}
    for fn in calls["on_optimizer"]:
        fn(optimizer)
    for fn in calls["on_train_start"]:
        fn()
    result = TrainResult(best_epoch=epochs, best_score=None)
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch",
               disable=not progress or world.rank != 0)
    global_step = 0
    for epoch in bar:
        for fn in calls["on_epoch_start"]:
            fn(epoch)
        start = time.perf_counter()
        module.train()
        sums: dict[str, torch.Tensor] = {}
        n = 0
        for batch in step.batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            parts = compute(*batch)
            loss = functools.reduce(operator.add, parts.values()) if isinstance(parts, dict) else parts
            loss.backward()
            if optim.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, optim.clip_grad)
            optimizer.step()
            _accumulate(sums, loss, parts)  # stays on the device: no sync per step
            n += 1
            global_step += 1
            for fn in calls["after_step"]:
                fn(global_step)
        if scheduler is not None:
            scheduler.step()
        logs = _epoch_logs(sums, n, desc, epoch, world.distributed)
        logs["seconds"] = time.perf_counter() - start
        stop = stopping.update(epoch, module, logs) if stopping is not None else False
        if world.distributed:
            stop = distributed.agree(stop, compute.device)
        logs = {f"{prefix}{k}": v for k, v in logs.items()}
        result.history.append({"epoch": epoch, **logs})
        bar.set_postfix({k: round(v, 4) for k, v in logs.items() if not k.endswith("seconds")})
        for fn in calls["on_epoch_end"]:
            fn(epoch, logs)
        if stop:
            break
    if stopping is not None:
        stopping.restore(module)
        if stopping.best_score is not None:
            result.best_epoch, result.best_score = stopping.best_epoch, stopping.best_score
    module.eval()
    return result


def _accumulate(sums: dict[str, torch.Tensor], loss: torch.Tensor, parts) -> None:
    named = {"loss": loss, **(parts if isinstance(parts, dict) else {})}
    for key, value in named.items():
        value = value.detach()
        sums[key] = sums[key] + value if key in sums else value


class _LossModule(nn.Module):
    """The step's loss as the forward of a module owning the trained parameters, so that
    DistributedDataParallel sees the forward and reduces their gradients in backward."""

    def __init__(self, module: nn.Module, loss: Callable) -> None:
        super().__init__()
        self.inner, self.loss = module, loss

    def forward(self, *batch):
        return self.loss(*batch)


class _ShardedLoss:
    """The step's loss on this rank's part of each global batch, under DDP: the rank's loss
    is weighted by its share of the batch, so the gradients DDP averages are those of the
    global batch mean."""

    def __init__(self, module: nn.Module, step: Step, world: distributed.World) -> None:
        self.world, self.device = world, next(module.parameters()).device
        self.ddp = distributed.wrap(_LossModule(module, step.loss))

    def __call__(self, *batch):
        part, weight = distributed.shard(batch, self.world)
        parts = self.ddp(*part)
        if isinstance(parts, dict):
            return {k: v * weight for k, v in parts.items()}
        return parts * weight


def _epoch_logs(sums: dict[str, torch.Tensor], n: int, desc: str, epoch: int,
                over_ranks: bool = False) -> dict[str, float]:
    """Epoch means of the loss and its parts (averaged over the ranks under data-parallel
    training), with one transfer from the device."""
    if n == 0:
        raise RecsysError(f"{desc}: epoch {epoch} had no batches")
    stacked = torch.stack(list(sums.values())).float()
    if over_ranks:
        stacked = distributed.mean_over_ranks(stacked)
    means = (stacked / n).tolist()
    logs = dict(zip(sums, means, strict=True))
    if not math.isfinite(logs["loss"]):
        raise RecsysError(f"{desc}: loss became {logs['loss']} at epoch {epoch}; "
                          "lower the learning rate")
    return logs
