"""Dynamic sparse training of embedding tables (DSL: Wang et al., "Towards Efficient and
Effective Recommendation: Dynamic Sparse Learning", WSDM 2024), as a `train_loop` hook.

Each table starts from a uniformly random mask holding exactly round(density * size) entries.
After every optimiser step the weights *and* the optimiser's per-weight moments (Adam's
exp_avg, exp_avg_sq) are multiplied by the mask, so a pruned weight is exactly zero and starts
from zero moments if it is regrown (the official code masks only SGD momentum: an Adam moment
left over from before the pruning would move a regrown weight at once). Every `every` steps,
offset by half of that (so that when `every` is a whole number of epochs, validation and the
exported model never come straight after an update, with its regrown weights still zero),
per table, the fraction r_t of the mask's entries with the smallest |w| is pruned and as many
positions outside the mask with the largest |gradient| of that step are regrown, from zero;
r_t anneals from `ratio` to min(0.005, ratio) by a cosine over `total` steps. The mask's size
never changes; the table's non-zeros are at most that size (a regrown weight is zero until its
next non-zero gradient). Everything stays on the device: per step two or three in-place
products, per update one top-k per table; no host synchronisation.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Sequence

import torch

from recsys.errors import RecsysError

MIN_RATIO = 0.005  # the cosine schedule's floor, as in the official code

log = logging.getLogger("recsys")


def check_density(density: float) -> float:
    """`density` itself, or RecsysError unless 0 < density <= 1 (a share of kept weights)."""
    if not (isinstance(density, int | float) and 0 < density <= 1):
        raise RecsysError(f"density must be in (0, 1] (the share of weights kept), got {density!r}")
    return float(density)


def kept(size: int, density: float) -> int:
    """Entries a table of `size` weights keeps at `density` (at least one)."""
    return max(1, round(density * size))


def update_ratio(step: int, total: int, ratio: float) -> float:
    """The share of the mask pruned and regrown at `step` of `total`: cosine from `ratio`
    down to min(MIN_RATIO, ratio) at step `total` (and after it)."""
    floor = min(MIN_RATIO, ratio)
    progress = min(step, total) / max(total, 1)
    return floor + 0.5 * (ratio - floor) * (1 + math.cos(math.pi * progress))


def prune_and_regrow(weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor, n: int) -> None:
    """Move `n` entries of `mask` (a float 0/1 tensor shaped like `weight`, changed in place):
    drop the n kept weights of smallest |w|, then add the n positions outside the mask of
    largest |grad| (a just-dropped position may come back). Dropped and added weights are set
    to zero (the caller's masking clears their optimiser moments)."""
    w, m = weight.detach().view(-1), mask.view(-1)
    dropped = torch.topk(w.abs().masked_fill(m == 0, math.inf), n, largest=False).indices
    m[dropped] = 0
    w[dropped] = 0
    added = torch.topk(grad.reshape(-1).abs().masked_fill(m != 0, -1.0), n).indices
    m[added] = 1


class DynamicSparsity:
    """`train_loop` hook keeping each tensor of `tables` at `density` (see the module doc).

    tables: 2-D parameters (embedding tables), each pruned on its own; every: steps between
    updates (the paper's delta T; the first at every // 2); ratio: the first update's share
    of the mask (r_0); total: the step count the cosine schedule spans; seed: the initial
    masks.
    """

    def __init__(self, tables: Sequence[torch.nn.Parameter], density: float, *, every: int,
                 ratio: float, total: int, seed: int = 0) -> None:
        check_density(density)
        if not tables:
            raise RecsysError("dynamic sparsity needs at least one table to sparsify")
        self.tables, self.density = list(tables), density
        self.every, self.ratio, self.total = every, ratio, total
        self.budgets = [kept(t.numel(), density) for t in self.tables]
        for table, budget in zip(self.tables, self.budgets, strict=True):
            if budget < len(table):
                log.warning("density=%g keeps %d weights of a table of %d rows: most users or "
                            "items get an all-zero vector and rank by ties; raise density",
                            density, budget, len(table))
        generator = torch.Generator(device=self.tables[0].device).manual_seed(seed)
        self.masks = []
        for table, budget in zip(self.tables, self.budgets, strict=True):
            mask = torch.zeros(table.numel(), dtype=table.dtype, device=table.device)
            mask[torch.randperm(table.numel(), generator=generator, device=table.device)[:budget]] = 1
            self.masks.append(mask.view_as(table))
        self.optimizer = lambda: None  # a weak reference: the moments die with the optimiser
        self.updates = 0
        self._apply()

    def on_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = weakref.ref(optimizer)

    def after_step(self, step: int) -> None:
        if step % self.every == self.every // 2:
            share = update_ratio(step, self.total, self.ratio)
            for table, mask, budget in zip(self.tables, self.masks, self.budgets, strict=True):
                if table.grad is not None:
                    grad = table.grad.to_dense() if table.grad.is_sparse else table.grad
                    prune_and_regrow(table, mask, grad, min(budget, math.ceil(share * budget)))
            self.updates += 1
        self._apply()

    @torch.no_grad()
    def _apply(self) -> None:
        """Zero the weights and optimiser moments outside the masks."""
        for table, mask in zip(self.tables, self.masks, strict=True):
            table.mul_(mask)
            for value in self._moments(table):
                value.mul_(mask)

    def _moments(self, table: torch.nn.Parameter) -> list[torch.Tensor]:
        optimizer = self.optimizer()
        state = optimizer.state.get(table, {}) if optimizer is not None else {}
        return [v for v in state.values()
                if isinstance(v, torch.Tensor) and v.shape == table.shape]
