"""Evaluation under exposure bias: uniformly exposed test sets, IPS/SNIPS estimates, and the
full-information truth of a simulation.

- `candidate_metrics`: the Yahoo! R3 / Coat protocol. Each user's uniformly exposed test items
  are ranked among themselves; DCG@K (sum of label / log2(rank + 1) over the top K),
  Recall@K and MAP@K, overall and with only rare items counted as relevant.
- `ips_metrics`: on a biased (MNAR) test set of clicks S, full ranking with training items
  excluded, propensities theta and c(r) = 1/log2(r + 1) for ranks r <= K.
  DCG@K is per user, averaged over users: naive = sum_{S_u} c, IPS = sum_{S_u} c / theta,
  unbiased for the sum of c over all the user's relevant items.
  Recall@K pools all pairs: naive = sum_S [r <= K] / |S|; SNIPS = sum_S [r <= K] / theta
  / sum_S 1 / theta (self-normalised; Saito et al. 2020, Yang et al. 2018). Pooling keeps
  SNIPS consistent when users have only a few test clicks each.
- `true_metrics`: the same DCG@K and Recall@K over every relevant item of a simulation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity
from recsys.data.simulate import CandidateSet, Simulation
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import Scorer
from recsys.inference import Ranker
from recsys.ranking import SCORE_BUDGET, parse_ks


def _discount(ranks: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(ranks + 1.0)


def _pair_scores(model: Scorer, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """model scores of aligned (user, item) pairs, scoring users in memory-bounded batches."""
    out = np.empty(len(users), dtype=np.float64)
    uniq, inverse = np.unique(users, return_inverse=True)
    batch = max(1, SCORE_BUDGET // max(n_items, 1))
    for start in range(0, len(uniq), batch):
        block = uniq[start:start + batch]
        rows = model.score(block).float().cpu().numpy()
        sel = (inverse >= start) & (inverse < start + len(block))
        out[sel] = rows[inverse[sel] - start, items[sel]]
    return out


def candidate_metrics(model: Scorer, candidates: CandidateSet, *,
                      k: int | Iterable[int] = (1, 3, 5),
                      rare_items: np.ndarray | None = None) -> dict[str, float]:
    """Metrics ranking each user's labelled candidates (the uniformly exposed test set).

    `rare_items` (bool per item) adds rare_* metrics where only rare items count as relevant.
    """
    ks = parse_ks(k)
    users, items = candidates.users, candidates.items
    labels = candidates.labels.astype(np.float64)
    n_items = int(items.max()) + 1 if rare_items is None else len(rare_items)
    scores = _pair_scores(model, users, items, n_items)
    order = np.lexsort((-scores, users))
    users, items, labels = users[order], items[order], labels[order]
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(users)]))
    ranks = np.arange(len(users)) - starts[group] + 1
    result = _ranked_metrics("", group, ranks, labels, ks)
    if rare_items is not None:
        result.update(_ranked_metrics("rare_", group, ranks, labels * rare_items[items], ks))
    return result


def _ranked_metrics(prefix: str, group, ranks, labels, ks) -> dict[str, float]:
    n_groups = int(group.max()) + 1
    n_pos = np.bincount(group, labels, n_groups)
    keep = n_pos > 0
    if not keep.any():
        return {f"{prefix}users": 0}
    # relevant items at or above each rank, within its user's list (groups are contiguous)
    csum = np.cumsum(labels)
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    hits_so_far = csum - (csum - labels)[first][group]
    out = {}
    for kk in ks:
        top = ranks <= kk
        dcg = np.bincount(group, labels * top * _discount(ranks), n_groups)
        recall = np.bincount(group, labels * top, n_groups) / np.maximum(n_pos, 1)
        ap = np.bincount(group, labels * top * hits_so_far / ranks, n_groups) / np.maximum(
            np.minimum(n_pos, kk), 1)
        out[f"{prefix}dcg@{kk}"] = float(dcg[keep].mean())
        out[f"{prefix}recall@{kk}"] = float(recall[keep].mean())
        out[f"{prefix}map@{kk}"] = float(ap[keep].mean())
    out[f"{prefix}users"] = int(keep.sum())
    return out


def _top_items(model: Scorer, users: np.ndarray, train: Interactions, kmax: int):
    """Yield (batch users, top-kmax items [b, kmax], finite [b, kmax]), training items excluded."""
    for block, items, scores in Ranker(model, train).blocks(users, kmax):
        yield block, items, np.isfinite(scores)


def ips_metrics(model: Scorer, test: Interactions, *, train: Interactions, propensity: Propensity,
                k: int | Iterable[int] = (5,), users: np.ndarray | None = None) -> dict[str, float]:
    """Naive, IPS and SNIPS estimates of DCG@K and Recall@K from biased test clicks
    (of `users` only, when given)."""
    ks = parse_ks(k)
    if users is not None:
        keep = np.zeros(test.n_users, dtype=bool)
        keep[users] = True
        rows, cols = test.coo
        test = test.with_pairs(rows, cols, keep[rows])
    users = np.flatnonzero(test.user_degree > 0)
    if len(users) == 0:
        raise RecsysError("the test set has no clicks")
    rows, cols = test.coo
    theta = propensity(torch.from_numpy(rows), torch.from_numpy(cols)).double().numpy()
    if (theta <= 0).any():
        raise RecsysError("a test click has propensity 0: clip the propensities")
    keys = rows * test.n_items + cols  # sorted: CSR order
    sums = {name: 0.0 for kk in ks for name in
            (f"naive_dcg@{kk}", f"ips_dcg@{kk}", f"naive_recall@{kk}", f"snips_recall@{kk}")}
    for block, items, valid in _top_items(model, users, train, max(ks)):
        q = block[:, None] * test.n_items + items
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        hit = (keys[pos] == q) & valid
        w = np.where(hit, 1 / theta[pos], 0.0)
        disc = _discount(np.arange(1, items.shape[1] + 1))
        for kk in ks:
            h, wk, d = hit[:, :kk], w[:, :kk], disc[:kk]
            sums[f"naive_dcg@{kk}"] += float((h * d).sum())
            sums[f"ips_dcg@{kk}"] += float((wk * d).sum())
            sums[f"naive_recall@{kk}"] += float(h.sum())
            sums[f"snips_recall@{kk}"] += float(wk.sum())
    result = {}
    for key, value in sums.items():
        denom = {"naive_r": test.nnz, "snips_r": (1 / theta).sum()}.get(key[:7], len(users))
        result[key] = float(value / denom)
    result["users"] = len(users)
    return result


def true_metrics(model: Scorer, sim: Simulation, *, train: Interactions, users: np.ndarray,
                 k: int | Iterable[int] = (5,)) -> dict[str, float]:
    """DCG@K (per user, summed over relevant items) and pooled Recall@K over every relevant
    item a user did not click in training: what `ips_metrics` estimates, known only in a
    simulation.
    """
    ks = parse_ks(k)
    sums = {f"{m}@{kk}": 0.0 for kk in ks for m in ("dcg", "recall")}
    counted = n_relevant = 0
    for block, items, valid in _top_items(model, np.asarray(users), train, max(ks)):
        relevant = sim.relevance_matrix(block).numpy() & (train.matrix[block].toarray() == 0)
        n_rel = relevant.sum(1)
        hit = np.take_along_axis(relevant, items, 1) & valid
        keep = n_rel > 0
        disc = _discount(np.arange(1, items.shape[1] + 1))
        for kk in ks:
            sums[f"dcg@{kk}"] += float((hit[keep, :kk] * disc[:kk]).sum())
            sums[f"recall@{kk}"] += float(hit[:, :kk].sum())
        counted += int(keep.sum())
        n_relevant += int(n_rel.sum())
    result = {key: value / max(n_relevant if key.startswith("recall") else counted, 1)
              for key, value in sums.items()}
    result["users"] = counted
    return result
