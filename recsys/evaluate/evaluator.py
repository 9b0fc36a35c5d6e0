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
    progress: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics averaged over test users with at least one test item.

    `train` (same id maps as `test`) supplies the items to exclude and the popularity used
    for coverage, average popularity and the head/tail slices (head = the `head_frac` most
    popular items). Users without test items are skipped and counted in `users_skipped`.
    """
    ks = parse_ks(k)
    if train is not None and train.matrix.shape != test.matrix.shape:
        raise RecsysError(f"train {train.matrix.shape} and test {test.matrix.shape} use different id maps")
    users = np.flatnonzero(test.user_degree > 0)
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
        relevant = torch.from_numpy(test.matrix[batch_users].toarray() != 0)
        counts["all"] += len(batch_users)
        _accumulate(sums["all"], relevant, items, valid, ks, metrics)
        for name, in_slice in slices.items():
            rel = relevant & in_slice
            keep = rel.any(1)
            counts[name] += int(keep.sum())
            _accumulate(sums[name], rel[keep], items[keep], valid[keep], ks, slice_metrics)
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
    result["users_skipped"] = int(test.n_users - len(users))
    return result


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)


def _accumulate(sums, relevant, items, valid, ks, metrics) -> None:
    if len(relevant) == 0:
        return
    hits = relevant.gather(1, items) & valid
    n_rel = relevant.sum(1)
    for kk in ks:
        for name, fn in metrics.items():
            _add(sums, f"{name}@{kk}", fn(hits[:, :kk], n_rel).sum())
