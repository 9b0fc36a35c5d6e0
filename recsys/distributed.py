"""Data-parallel training over several processes: one per GPU (NCCL), or several on CPU (gloo).

`launch(nproc, args)` starts `nproc` copies of a command through torch's elastic launcher (what
`torchrun --standalone` does); a script already started by `torchrun` is recognised by the
variables the launcher sets (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`). In each process `setup`
joins the process group and picks the device, and the training loop then

- draws every global batch on every rank from the same seeded generator and keeps the rank's
  contiguous part of it (`shard`): the ranks' parts of an epoch partition the training pairs,
  and the N-process run takes the same steps as the one-process run with the same
  `batch_size` (the global batch) and seed, up to the order of floating-point sums, for
  losses that are means over the batch's pairs with their randomness drawn in the batches
  (`mf`, `lightgcn`, `gnolr`); a loss coupling the pairs of a batch
  (in-batch softmax, contrastive terms over the batch's distinct ids) or drawing inside
  `loss` sees the rank's part only, and trains a close but not the same model;
- reduces the gradients with DistributedDataParallel (each rank's loss weighted by its share
  of the batch, so uneven last batches average exactly as one process would);
- validates on rank 0 only and broadcasts the score and the stop decision (`on_main`, `agree`),
  so every rank keeps the same best epoch, restores the same weights and stops together;
  only rank 0 logs, shows progress and saves (`is_main`).

Embedding gradients stay dense. The models train with Adam/AdamW, whose moments move every
row at every step and which torch implements for dense gradients only; the lazy SparseAdam
would change the results (and has no weight decay), so sparse gradients would break the
promise that N processes train the model one process trains. The cost is an all-reduce of
the full embedding tables per step (bench/RESULTS.md measures what that leaves of the
speed-up).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from recsys.errors import RecsysError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without a launcher)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The process group as the launcher described it in the environment."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise RecsysError(f"launcher environment: {exc}") from None
    return World(rank, size, local)


def is_main() -> bool:
    """Whether this process logs and saves: rank 0, or the only process."""
    return world().rank == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched as one of several processes, and return the
    device this rank trains on: `cuda:LOCAL_RANK` for CUDA (NCCL), `device` otherwise (gloo).
    Without a launcher, `device` unchanged. Raises RecsysError when there are fewer GPUs
    than processes on this host."""
    w = world()
    if not w.distributed:
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if w.local_rank >= count:
            raise RecsysError(f"process {w.local_rank} of this host has no GPU: only {count} "
                              "CUDA devices (use at most that many processes)")
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", w.size))
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_shutdown)
    return device


def _shutdown() -> None:
    """Leave the group together: a rank tearing down its gloo connections while a peer still
    uses them can abort the peer ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(module: nn.Module) -> nn.Module:
    """`module` under DistributedDataParallel (its parameters' gradients averaged over ranks
    in backward). Parameters a family leaves out of its loss (part of a two-tower encoder,
    say) keep no gradient, as in one process: the graph is declared static, so DDP finds
    them in the first step instead of searching every step's autograd graph; the set of
    parameters a family uses must not change from step to step."""
    device = next(module.parameters()).device
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device] if device.type == "cuda" else None,
        gradient_as_bucket_view=True, static_graph=True)


def shard(batch: tuple, w: World) -> tuple[tuple, float]:
    """Rank `w.rank`'s contiguous part of a global batch: every tensor whose first dimension
    is the batch length (that of the first tensor) is cut, anything else passed whole. Also
    returns the loss weight size_r * N / size that makes the mean of the ranks' weighted
    batch-mean losses equal the global batch mean. A batch smaller than the number of ranks
    leaves some ranks without a part: they compute the whole batch's loss at weight 0 (every
    rank must take part in the gradient reduction, and an empty batch's mean is NaN)."""
    n = next(len(t) for t in batch if isinstance(t, torch.Tensor))
    lo, hi = w.rank * n // w.size, (w.rank + 1) * n // w.size
    if lo == hi:
        return batch, 0.0
    part = tuple(t[lo:hi] if isinstance(t, torch.Tensor) and t.dim() and len(t) == n else t
                 for t in batch)
    return part, (hi - lo) * w.size / n


def _broadcast(values: Sequence[float], device: torch.device) -> list[float]:
    buffer = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.broadcast(buffer, src=0)
    return buffer.tolist()


def on_main(fn: Callable[[], float] | None, device: torch.device) -> Callable[[], float]:
    """A function that runs `fn` on rank 0 only (other ranks may pass None) and returns its
    value on every rank."""
    def run() -> float:
        value = fn() if is_main() else 0.0
        return _broadcast([value], device)[0]
    return run


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag`, on every rank (e.g. the decision to stop training)."""
    return bool(_broadcast([float(flag)], device)[0])


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `values` over the ranks."""
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def check_nproc(nproc: int, device: torch.device) -> None:
    """Reject a process count that cannot run: below 1, or more processes than this host has
    GPUs when training on CUDA (`device` as `recsys.train.resolve_device` returns it), or CPU
    cores on CPU (each process holds its own copy of torch and the data; more than one per
    core only slows the run and can exhaust the memory)."""
    if nproc < 1:
        raise RecsysError(f"--nproc must be at least 1, got {nproc}")
    cores = os.cpu_count() or 1
    if nproc > cores and device.type == "cpu":
        raise RecsysError(f"--nproc {nproc}: this host has {cores} CPU cores (one process per "
                          "core on CPU)")
    if nproc > 1 and device.type == "cuda":
        count = torch.cuda.device_count()
        if nproc > count:
            raise RecsysError(f"--nproc {nproc}: this host has {count} GPUs (one process per GPU;"
                              " pass --param device=cpu to train on CPU with gloo)")


def launch(nproc: int, args: Sequence[str], program: str = sys.executable) -> None:
    """Run `program args...` as `nproc` processes on this host through torch's elastic
    launcher (a local rendezvous on a free port, no restarts), and wait for all of them.
    Raises RecsysError naming the first process that failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    # the launcher's own log lines would repeat what the failing process and the error say
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, program)(*args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise RecsysError(f"training process {rank} of {nproc} failed with exit code "
                          f"{failure.exitcode} (its message is above)") from None
    finally:
        logger.setLevel(level)
