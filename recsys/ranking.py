"""Ranking primitives shared by evaluation, batch jobs and serving.

One tie rule everywhere: equal scores rank the lower item index first, so every path (evaluate,
`recsys recommend`, the pyfunc model, Spark and the HTTP endpoint) returns the same list for the
same scores, even for a model made mostly of ties such as `pop`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import RecsysError

SCORE_BUDGET = 2**24  # scores held at once (users x items), bounds memory on any catalogue


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
    return sorted({int(k) for k in ks})


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, scores) of the min(k, n) best of each row of `scores` [rows, n], best first.

    Ties go to the lower index, exactly, on any device; masked (-inf) entries come last. Costs
    one `torch.topk`; rows whose k-th score ties with the (k+1)-th (a tie group cut by k) pay
    one more pass to pick the lowest indices of that group.
    """
    rows, n = scores.shape
    k = min(k, n)
    if rows == 1 and k < n and scores.device.type == "cpu":  # a lone request: numpy is faster
        items, values = _top_k_row(scores[0].numpy(), k)
        return torch.from_numpy(items)[None], torch.from_numpy(values)[None]
    if k < n:
        values, items = torch.topk(scores, k + 1, dim=1)
        kth = values[:, k - 1:k]
        cut = (values[:, k] == kth[:, 0]).nonzero()[:, 0]  # a tie group straddles the cut
        items = items[:, :k]
        if len(cut):
            sub, threshold = scores[cut], kth[cut]
            n_above = (values[cut, :k] > threshold).sum(1, keepdim=True)
            index = torch.arange(n, device=scores.device)
            # the tied entries by ascending index: topk of -index over the tie group
            tied = torch.topk(torch.where(sub == threshold, index, n), k, dim=1, largest=False).indices
            slot = torch.arange(k, device=scores.device)
            picked = tied.gather(1, (slot - n_above).clamp(min=0))
            items = items.clone()
            items[cut] = torch.where(slot < n_above, items[cut], picked)
    else:
        items = torch.arange(n, device=scores.device).expand(rows, n)
    items = items.sort(1).values  # ascending index, then a stable sort by score
    values = scores.gather(1, items)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return items.gather(1, order), values.gather(1, order)


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
    m = matrix.copy()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return torch.from_numpy(rows * m.shape[1] + m.indices)


def contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Membership of `keys` in `sorted_keys` by binary search: no dense users x items matrix."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
