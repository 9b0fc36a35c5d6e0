"""Batched full-ranking evaluation: score all items, mask training items, top-K, metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.inference import Ranker
from recsys.ranking import SCORE_BUDGET, contains, pair_keys, parse_ks

SLICE_METRICS = ("recall", "ndcg")


class Scorer(Protocol):
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor: ...


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
    popular items). Test pairs that are also training pairs can never be hit (training items
    are excluded): they are dropped and counted in `test_pairs_in_train`. Users without test
    items are skipped and counted in `users_skipped`; `users` restricts the evaluation to those
    user indices (e.g. a sample, for speed).
    """
    ks = parse_ks(k)
    if train is not None and train.matrix.shape != test.matrix.shape:
        raise RecsysError(f"train {train.matrix.shape} and test {test.matrix.shape} use different id maps")
    test, in_train = drop_training_pairs(test, train)
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
    test_keys = pair_keys(test.matrix)
    ranker = Ranker(model, train, n_items=n_items)
    batch = max(1, SCORE_BUDGET // max(n_items, 1))
    starts = range(0, len(users), batch)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        batch_users = users[start:start + batch]
        items, values = ranker.top_items(batch_users, kmax)
        items, valid = torch.from_numpy(items), torch.from_numpy(np.isfinite(values))
        if items.shape[1] < kmax:  # catalogue smaller than K: pad with misses
            pad = kmax - items.shape[1]
            items = torch.cat([items, torch.zeros(len(items), pad, dtype=items.dtype)], 1)
            valid = torch.cat([valid, torch.zeros(len(items), pad, dtype=torch.bool)], 1)
        user_t = torch.from_numpy(batch_users)
        hits = contains(test_keys, user_t[:, None] * n_items + items) & valid
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
    result["test_pairs_in_train"] = in_train
    return result


def drop_training_pairs(test: Interactions, train: Interactions | None) -> tuple[Interactions, int]:
    """`test` without the pairs that are also in `train` (they can never be recommended), and
    how many there were."""
    if train is None:
        return test, 0
    rows, cols = test.coo
    in_train = contains(pair_keys(train.matrix), torch.from_numpy(rows * test.n_items + cols)).numpy()
    if not in_train.any():
        return test, 0
    return test.with_pairs(rows, cols, ~in_train), int(in_train.sum())


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)


def _accumulate(sums, hits, n_rel, ks, metrics) -> None:
    if len(hits) == 0:
        return
    for kk in ks:
        for name, fn in metrics.items():
            _add(sums, f"{name}@{kk}", fn(hits[:, :kk], n_rel).sum())
