"""Metrics for graded feedback (test pairs with levels 1..L), full ranking over all items.

- Per level g: Recall@K and NDCG@K with the test items of level >= g as the relevant ones
  (binary gains), averaged over the users who have at least one such item; keys
  `<level name>_recall@K`, `<level name>_ndcg@K`, `<level name>_users`.
- Graded NDCG@K: gain 2^level - 1 at each rank, discount 1 / log2(rank + 1), divided by the
  DCG of the user's test items sorted by level (the best possible top K); averaged over
  users with a test item; key `graded_ndcg@K`.
Training items are excluded from the ranking, as in `evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import Scorer
from recsys.evaluate.metrics import ndcg, recall
from recsys.evaluate.unbiased import _discount, _top_items
from recsys.ranking import pair_keys, parse_ks


def graded_metrics(model: Scorer, test: Interactions, *, train: Interactions,
                   k: int | str | Iterable[int] = (10, 20),
                   users: np.ndarray | None = None) -> dict[str, float]:
    """Per-level Recall@K / NDCG@K and graded NDCG@K of `model` on the levels of `test`.

    `train` (same id maps) holds the items to exclude; `users` restricts the evaluation to
    those user indices. Raises RecsysError when `test` has no levels.
    """
    if test.levels is None:
        raise RecsysError("graded metrics need test levels (a level column in the test file)")
    if train.matrix.shape != test.matrix.shape:
        raise RecsysError(f"train {train.matrix.shape} and test {test.matrix.shape} use "
                          "different id maps")
    ks = parse_ks(k)
    names = test.level_names
    n_levels = len(names)
    levels = test.levels.tocsr()
    levels.sort_indices()
    keys = pair_keys(levels).numpy()
    chosen = np.arange(test.n_users) if users is None else np.unique(np.asarray(users))
    chosen = chosen[test.user_degree[chosen] > 0]
    if len(chosen) == 0:
        raise RecsysError("no test user has a test item known to the model: nothing to evaluate")

    sums: dict[str, float] = {}
    level_of: dict[str, int] = {}  # the level whose users average each key (0: all)
    counts = np.zeros(n_levels + 1, dtype=np.int64)  # users with an item of level >= g
    for block, items, valid in _top_items(model, chosen, train, max(ks)):
        at = _level_at(keys, levels.data, block[:, None] * test.n_items + items) * valid
        at = torch.from_numpy(at.astype(np.int64))
        per_level = _count_at_least(levels[block], n_levels)  # [b, L + 1], column 0 unused
        for g in range(1, n_levels + 1):
            has = per_level[:, g] > 0
            counts[g] += int(has.sum())
            hits, n_rel = at[has] >= g, per_level[has, g]
            for kk in ks:
                for metric, fn in (("recall", recall), ("ndcg", ndcg)):
                    key = f"{names[g - 1]}_{metric}@{kk}"
                    sums[key] = sums.get(key, 0.0) + float(fn(hits[:, :kk], n_rel).sum())
                    level_of[key] = g
        counts[0] += len(block)
        ideal = _ideal_levels(per_level, max(ks))
        disc = _discount(np.arange(1, max(ks) + 1))
        gains, ideal_gains = 2.0 ** at.numpy() - 1, 2.0 ** ideal - 1
        for kk in ks:
            dcg = (gains[:, :kk] * disc[:kk]).sum(1)
            idcg = (ideal_gains[:, :kk] * disc[:kk]).sum(1)
            key = f"graded_ndcg@{kk}"
            sums[key] = sums.get(key, 0.0) + float((dcg / idcg).sum())
            level_of[key] = 0

    result = {key: total / counts[level_of[key]] for key, total in sums.items()
              if counts[level_of[key]]}
    result.update({f"{name}_users": int(counts[g]) for g, name in enumerate(names, start=1)})
    result["graded_users"] = int(counts[0])
    return result


def _level_at(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The level stored at each query key (0 where the pair is not a test pair)."""
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0)


def _count_at_least(rows: sp.csr_matrix, n_levels: int) -> torch.Tensor:
    """[users, L + 1]: column g counts each user's test items of level >= g."""
    user = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    exact = np.bincount(user * (n_levels + 1) + rows.data.astype(np.int64),
                        minlength=rows.shape[0] * (n_levels + 1)).reshape(-1, n_levels + 1)
    return torch.from_numpy(np.cumsum(exact[:, ::-1], 1)[:, ::-1].copy())


def _ideal_levels(at_least: torch.Tensor, k: int) -> np.ndarray:
    """[users, k]: the levels of each user's test items, best first, 0 past the last one.

    At rank r (0-based) the best level is the number of levels g with more than r items of
    level >= g.
    """
    ranks = torch.arange(k)
    return (at_least[:, 1:, None] > ranks).sum(1).numpy()
