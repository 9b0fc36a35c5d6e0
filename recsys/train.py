"""One training loop for every torch model: device, epochs, early stopping, progress, callbacks."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from recsys.errors import RecsysError


class Callback(Protocol):
    """Receives one call per epoch, e.g. to log metrics to MLflow."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float | None
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecsysError("device 'cuda' requested but no CUDA device is available")
    return device


def train_loop(
    module: torch.nn.Module,
    batches: Callable[[], Iterable],
    loss_fn: Callable[..., torch.Tensor],
    *,
    epochs: int,
    lr: float,
    validate: Callable[[], float] | None = None,
    patience: int = 10,
    warmup: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Adam over `batches()` each epoch; with `validate` (higher is better), keeps the best
    epoch's weights and stops after `patience` epochs without improvement. The first
    `warmup` epochs are validated and logged but cannot be chosen (an early, transient peak
    of a noisy validation metric would otherwise end training).
    """
    if epochs <= 0:
        raise RecsysError(f"epochs must be positive, got {epochs}")
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    best = TrainResult(best_epoch=epochs, best_score=None)
    best_state = None
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        start, total, n = time.perf_counter(), 0.0, 0
        module.train()
        for batch in batches():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(*batch)
            loss.backward()
            optimizer.step()
            total, n = total + loss.detach(), n + 1  # stays on the device: no sync per step
        logs = {"loss": float(total) / max(n, 1), "seconds": time.perf_counter() - start}
        if not torch.isfinite(torch.tensor(logs["loss"])):
            raise RecsysError(f"{desc}: loss became {logs['loss']} at epoch {epoch}; "
                              "lower the learning rate")
        if validate is not None:
            module.eval()
            with torch.no_grad():
                logs["valid"] = validate()
            if epoch > warmup and (best.best_score is None or logs["valid"] > best.best_score):
                best.best_epoch, best.best_score = epoch, logs["valid"]
                best_state = copy.deepcopy(module.state_dict())
        best.history.append({"epoch": epoch, **logs})
        bar.set_postfix({k: round(v, 4) for k, v in logs.items() if k != "seconds"})
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        last_gain = best.best_epoch if best.best_score is not None else warmup
        if validate is not None and epoch > warmup and epoch - last_gain >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return best
