"""Batched full-ranking evaluation: score all items, mask training items, top-K, metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.evaluate.metrics import RANKING_METRICS

SCORE_BUDGET = 2**24  # scores held at once (users x items), bounds memory on any catalogue
SLICE_METRICS = ("recall", "ndcg")


class Scorer(Protocol):
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor: ...


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


def mask_rows(scores: torch.Tensor, rows: sp.csr_matrix) -> None:
    """Set scores of the stored entries of `rows` (one CSR row per score row) to -inf, in place."""
    if rows.nnz == 0:
        return
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    idx = torch.from_numpy(r).to(scores.device), torch.from_numpy(rows.indices.astype(np.int64)).to(
        scores.device)
    scores[idx] = float("-inf")


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, scores) of the k best per row, best first; masked (-inf) entries come last."""
    values, items = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return items, values


def evaluate(
    model: Scorer,
    test: Interactions,
    *,
    train: Interactions | None = None,
    k: int | str | Iterable[int] = (10, 20),
    metrics: Mapping = RANKING_METRICS,
    head_frac: float = 0.2,
    users: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics averaged over test users with at least one test item.

    `train` (same id maps as `test`) supplies the items to exclude and the popularity used
    for coverage, average popularity and the head/tail slices (head = the `head_frac` most
    popular items). Users without test items are skipped and counted in `users_skipped`;
    `users` restricts the evaluation to those user indices (e.g. a sample, for speed).
    """
    ks = parse_ks(k)
    if train is not None and train.matrix.shape != test.matrix.shape:
        raise RecsysError(f"train {train.matrix.shape} and test {test.matrix.shape} use different id maps")
    candidates = np.arange(test.n_users) if users is None else np.unique(np.asarray(users))
    users = candidates[test.user_degree[candidates] > 0]
    if len(users) == 0:
        raise RecsysError("no test user has a test item known to the model: nothing to evaluate")
    n_items, kmax = test.n_items, max(ks)
    popularity = torch.from_numpy(train.item_popularity if train is not None else test.item_popularity)
    n_head = int(np.ceil(head_frac * n_items))
    is_head = torch.zeros(n_items, dtype=torch.bool)
    is_head[torch.argsort(-popularity, stable=True)[:n_head]] = True
    slices = {"head": is_head, "tail": ~is_head}

    groups = ("all", *slices)
    sums: dict[str, dict[str, float]] = {g: {} for g in groups}
    counts = dict.fromkeys(groups, 0)
    recommended = {kk: torch.zeros(n_items, dtype=torch.bool) for kk in ks}
    slice_metrics = {n: metrics[n] for n in SLICE_METRICS if n in metrics}
    slice_matrix = torch.stack(list(slices.values()), 1).numpy().astype(np.float32)
    test_keys = _pair_keys(test.matrix)
    batch = max(1, SCORE_BUDGET // max(n_items, 1))
    starts = range(0, len(users), batch)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        batch_users = users[start:start + batch]
        scores = model.score(batch_users).float()
        if train is not None:
            mask_rows(scores, train.matrix[batch_users])
        items, values = top_k(scores, kmax)
        items, valid = items.cpu(), torch.isfinite(values).cpu()
        if items.shape[1] < kmax:  # catalogue smaller than K: pad with misses
            pad = kmax - items.shape[1]
            items = torch.cat([items, torch.zeros(len(items), pad, dtype=items.dtype)], 1)
            valid = torch.cat([valid, torch.zeros(len(items), pad, dtype=torch.bool)], 1)
        user_t = torch.from_numpy(batch_users)
        hits = _contains(test_keys, user_t[:, None] * n_items + items) & valid
        n_rel = torch.from_numpy(test.user_degree[batch_users])
        counts["all"] += len(batch_users)
        _accumulate(sums["all"], hits, n_rel, ks, metrics)
        pattern = test.matrix[batch_users]
        pattern.data = np.ones_like(pattern.data)  # stored pairs count, whatever their weight
        per_slice = torch.from_numpy(pattern @ slice_matrix).long()
        for col, (name, in_slice) in enumerate(slices.items()):
            keep = per_slice[:, col] > 0
            counts[name] += int(keep.sum())
            slice_hits = hits[keep] & in_slice[items[keep]]
            _accumulate(sums[name], slice_hits, per_slice[keep, col], ks, slice_metrics)
        for kk in ks:
            top, ok = items[:, :kk], valid[:, :kk]
            recommended[kk][top[ok]] = True
            n_valid = ok.sum(1).clamp(min=1)
            pop = torch.where(ok, popularity[top].double(), 0.0)
            _add(sums["all"], f"avg_popularity@{kk}", (pop.sum(1) / n_valid).sum())
            _add(sums["all"], f"tail_share@{kk}", ((ok & ~is_head[top]).sum(1) / n_valid).sum())

    # a slice no test user has items in has no metric (rather than a NaN)
    result = {(key if g == "all" else f"{g}_{key}"): total / counts[g]
              for g in groups if counts[g] for key, total in sums[g].items()}
    for kk in ks:
        result[f"coverage@{kk}"] = float(recommended[kk].sum()) / n_items
    result["users"] = counts["all"]
    result["users_skipped"] = int(len(candidates) - len(users))
    return result


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)


def _pair_keys(matrix: sp.csr_matrix) -> torch.Tensor:
    """Sorted keys user * n_items + item of the stored pairs (CSR order is already sorted)."""
    m = matrix.copy()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return torch.from_numpy(rows * m.shape[1] + m.indices)


def _contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Membership of `keys` in `sorted_keys` by binary search: no dense users x items matrix."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _accumulate(sums, hits, n_rel, ks, metrics) -> None:
    if len(hits) == 0:
        return
    for kk in ks:
        for name, fn in metrics.items():
            _add(sums, f"{name}@{kk}", fn(hits[:, :kk], n_rel).sum())
