"""Ranking primitives shared by evaluation, batch jobs and serving.

One tie rule everywhere: equal scores rank the lower item index first, so every path (evaluate,
`recsys recommend`, the pyfunc model, Spark and the HTTP endpoint) returns the same list for the
same scores, even for a model made mostly of ties such as `pop`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import RecsysError

MAX_BLOCK_SCORES = 2**28  # most scores (users x items) one block holds, whatever the memory
MEMORY_SHARE = 0.25  # of the free memory that one block of scores and its work may take
BYTES_PER_SCORE = 16  # a float score plus top-k, masking and metric work per score
SMALL_BLOCK_SCORES = 2**20  # scores (16 MB of work) scored in one block without asking


def block_rows(n_cols: int, device: str | torch.device = "cpu", rows: int | None = None) -> int:
    """Rows of a [rows, n_cols] block of scores that fit in MEMORY_SHARE of the free memory
    of `device` (the GPU's free memory, or the host's available memory for the CPU), at most
    MAX_BLOCK_SCORES scores and at least one row. Few large blocks keep an accelerator busy;
    the bound keeps a block from exhausting memory on any catalogue. With `rows` (the rows to
    score), a job of at most SMALL_BLOCK_SCORES is one block without probing the memory,
    which would cost a serving request more than its scoring."""
    if rows is not None and rows * n_cols <= min(SMALL_BLOCK_SCORES, MAX_BLOCK_SCORES):
        return max(1, rows)
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = _available_host_memory()
    scores = min(MAX_BLOCK_SCORES, int(free * MEMORY_SHARE) // BYTES_PER_SCORE)
    return max(1, scores // max(n_cols, 1))


def _available_host_memory() -> int:
    """Bytes of host memory available (MemAvailable on Linux, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**30


MAX_K = 2**31 - 1  # the longest list a K may ask for (K past the catalogue only adds misses)


def parse_ks(ks: int | str | Iterable[int]) -> list[int]:
    """K values from 20, "10,20" or [10, 20]; each must be a positive integer."""
    if isinstance(ks, str):
        try:
            ks = [int(x) for x in ks.split(",") if x.strip()]
        except ValueError as exc:
            raise RecsysError(f"k must be positive integers separated by commas, got {ks!r}") from exc
    ks = [ks] if isinstance(ks, int | np.integer) else list(ks)
    if not ks or any(int(k) <= 0 for k in ks):
        raise RecsysError(f"k must be positive integers, got {ks}")
    if max(int(k) for k in ks) > MAX_K:  # ranked lists are int32-indexed tensors
        raise RecsysError(f"k must be at most {MAX_K}, got {max(int(k) for k in ks)}")
    return sorted({int(k) for k in ks})


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, scores) of the min(k, n) best of each row of `scores` [rows, n], best first.

    Ties go to the lower index, exactly, on any device; masked (-inf) entries come last. Costs
    one `torch.topk`; rows whose k-th score ties with the (k+1)-th (a tie group cut by k) pay
    one more pass to pick the lowest indices of that group (and one host sync to find them).
    """
    rows, n = scores.shape
    k = min(k, n)
    if rows == 1 and k < n and scores.device.type == "cpu":  # a lone request: numpy is faster
        items, values = _top_k_row(scores[0].numpy(), k)
        return torch.from_numpy(items)[None], torch.from_numpy(values)[None]
    if k == n:
        return _best_first(scores, torch.arange(n, device=scores.device).expand(rows, n))
    values, items = torch.topk(scores, k + 1, dim=1)
    cut = (values[:, k] == values[:, k - 1]).nonzero()[:, 0]  # a tie group straddles the cut
    items = items[:, :k]
    if len(cut):
        items = items.clone()
        items[cut] = _lowest_of_tie(scores[cut], values[cut, :k], items[cut])
    return _best_first(scores, items)


def top_k_unsure(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`top_k` without a host sync: (items, scores, unsure), where `unsure` [rows] marks the
    rows whose k-th score ties with an item left out. The tie rule holds for every other row;
    an unsure row may hold other members of the cut tie group, so rank it again with `top_k`
    (a batch finds all unsure rows with one sync at its end)."""
    rows, n = scores.shape
    k = min(k, n)
    if k == n:
        items = torch.arange(n, device=scores.device).expand(rows, n)
        return (*_best_first(scores, items), torch.zeros(rows, dtype=torch.bool, device=scores.device))
    values, items = torch.topk(scores, k + 1, dim=1)
    return (*_best_first(scores, items[:, :k]), values[:, k] == values[:, k - 1])


def _lowest_of_tie(scores: torch.Tensor, values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The top k items of rows whose k-th value (`values` and `items`: their k best, best
    first) ties with an item beyond: the items above it, then the lowest indices of its tie
    group."""
    n, k = scores.shape[1], items.shape[1]
    threshold = values[:, k - 1:k]
    n_above = (values > threshold).sum(1, keepdim=True)
    index = torch.arange(n, device=scores.device)
    # the tied entries by ascending index: topk of -index over the tie group
    tied = torch.topk(torch.where(scores == threshold, index, n), k, dim=1, largest=False).indices
    slot = torch.arange(k, device=scores.device)
    picked = tied.gather(1, (slot - n_above).clamp(min=0))
    return torch.where(slot < n_above, items, picked)


def _best_first(scores: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`items` (a row's chosen indices) ordered by score, ties by ascending index, and their
    scores: one sort of the keys (rank of the score among the row's distinct chosen scores,
    index)."""
    values = scores.gather(1, items)
    values, order = torch.sort(values, dim=1, descending=True)
    items = items.gather(1, order)
    group = torch.cumsum(values[:, 1:] != values[:, :-1], 1)  # same score, same group
    group = torch.nn.functional.pad(group, (1, 0))
    keys = torch.sort(group * scores.shape[1] + items, dim=1).values
    return keys % scores.shape[1], values


def _top_k_row(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`top_k` of one row with numpy's partition (k < len(scores)): the same rule."""
    n = len(scores)
    kth = np.partition(scores, n - k)[n - k]
    above = np.flatnonzero(scores > kth)
    part = np.concatenate([above, np.flatnonzero(scores == kth)[:k - len(above)]])
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


def mask_rows(scores: torch.Tensor, rows: sp.csr_matrix) -> None:
    """Set scores of the stored entries of `rows` (one CSR row per score row) to -inf, in place."""
    mask_pairs(scores, np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices)


def mask_pairs(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> None:
    """Set scores[rows[i], cols[i]] to -inf, in place."""
    if len(rows) == 0:
        return
    device = scores.device
    scores[torch.as_tensor(rows, dtype=torch.long, device=device),
           torch.as_tensor(cols, dtype=torch.long, device=device)] = float("-inf")


def pair_keys(matrix: sp.csr_matrix) -> torch.Tensor:
    """Sorted keys user * n_items + item of the stored pairs of a CSR matrix."""
    m = matrix if matrix.has_sorted_indices else matrix.sorted_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return torch.from_numpy(rows * m.shape[1] + m.indices)


def contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Membership of `keys` in `sorted_keys` by binary search: no dense users x items matrix."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
