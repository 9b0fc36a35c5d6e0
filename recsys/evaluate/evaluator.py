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
from recsys.ranking import block_rows, contains, pair_keys, parse_ks

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
    ranker = Ranker(model, train, n_items=test.n_items)
    test, in_train = drop_training_pairs(test, train, ranker.device)
    candidates = np.arange(test.n_users) if users is None else np.unique(np.asarray(users))
    users = candidates[test.user_degree[candidates] > 0]
    if len(users) == 0:
        raise RecsysError("no test user has a test item known to the model: nothing to evaluate")
    items, valid = _rank_all(ranker, users, max(ks), progress)
    result = _metrics(items, valid, users, test, train, ks, metrics, head_frac)
    result["users"] = len(users)
    result["users_skipped"] = int(len(candidates) - len(users))
    result["test_pairs_in_train"] = in_train
    return result


def _rank_all(ranker: Ranker, users: np.ndarray, k: int, progress: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k item indices [len(users), k] and whether each is a real candidate (not masked,
    not padding past the catalogue), on the scoring device. Blocks are queued without waiting
    for the device; the rows whose cut fell inside a tie group are ranked again at the end
    (one host sync), so every row follows the tie rule."""
    step = block_rows(ranker.n_items, ranker.device)
    tops, valids, unsure = [], [], []
    starts = range(0, len(users), step)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        top, values, doubt = ranker.top_known(users[start:start + step], k)
        tops.append(top)
        valids.append(torch.isfinite(values))
        unsure.append(doubt)
    items, valid, unsure = torch.cat(tops), torch.cat(valids), torch.cat(unsure)
    redo = unsure.nonzero()[:, 0]
    if len(redo):
        top, values = ranker.top_items(users[redo.cpu().numpy()], k)
        items[redo] = torch.from_numpy(top).to(items.device)
        valid[redo] = torch.from_numpy(np.isfinite(values)).to(items.device)
    if items.shape[1] < k:  # catalogue smaller than K: pad with misses
        pad = k - items.shape[1]
        items = torch.nn.functional.pad(items, (0, pad))
        valid = torch.nn.functional.pad(valid, (0, pad))
    return items, valid


def _metrics(items: torch.Tensor, valid: torch.Tensor, users: np.ndarray, test: Interactions,
             train: Interactions | None, ks: list[int], metrics: Mapping, head_frac: float
             ) -> dict[str, float]:
    """The metrics of the ranked lists `items` [len(users), K] (see `evaluate`), computed on
    their device with one transfer of the totals at the end."""
    device, n_items = items.device, test.n_items
    popularity = torch.from_numpy(train.item_popularity if train is not None else test.item_popularity)
    n_head = int(np.ceil(head_frac * n_items))
    is_head = torch.zeros(n_items, dtype=torch.bool)
    is_head[torch.argsort(-popularity, stable=True)[:n_head]] = True
    popularity, is_head = popularity.to(device, torch.float64), is_head.to(device)
    user_t = torch.from_numpy(users).to(device)
    hits = contains(pair_keys(test.matrix).to(device), user_t[:, None] * n_items + items) & valid
    rows, cols = (torch.from_numpy(a).to(device) for a in test.coo)
    n_rel = torch.from_numpy(test.user_degree).to(device)
    head_rel = torch.bincount(rows[is_head[cols]], minlength=test.n_users)
    slices = {"head": (is_head, head_rel), "tail": (~is_head, n_rel - head_rel)}
    slice_metrics = {n: metrics[n] for n in SLICE_METRICS if n in metrics}

    totals: dict[str, tuple[str, torch.Tensor]] = {}  # key -> (user group, sum over it)
    counts = {"all": torch.tensor(len(users), device=device)}
    _accumulate(totals, "all", hits, n_rel[user_t], None, ks, metrics)
    times = {}
    for kk in ks:
        top, ok = items[:, :kk], valid[:, :kk]
        n_valid = ok.sum(1).clamp(min=1)
        pop = torch.where(ok, popularity[top], 0.0)
        totals[f"avg_popularity@{kk}"] = ("all", (pop.sum(1) / n_valid).sum())
        totals[f"tail_share@{kk}"] = ("all", ((ok & ~is_head[top]).sum(1) / n_valid).sum())
        times[kk] = torch.zeros(n_items, device=device).index_add_(0, top.flatten(), ok.flatten().float())
    for name, (in_slice, per_user) in slices.items():
        n_slice = per_user[user_t]
        keep = n_slice > 0
        counts[name] = keep.sum()
        _accumulate(totals, name, hits & in_slice[items], n_slice.clamp(min=1), keep, ks,
                    slice_metrics)
    coverage = [(t > 0).sum() for t in times.values()]
    flat = [t for _, t in totals.values()] + list(counts.values()) + coverage
    values = torch.stack([t.double() for t in flat]).tolist()  # the one transfer
    sums = dict(zip(totals, values, strict=False))
    n = dict(zip(counts, values[len(totals):], strict=False))
    # a slice no test user has items in has no metric (rather than a NaN)
    result = {key: sums[key] / n[group] for key, (group, _) in totals.items() if n[group]}
    for kk, covered in zip(ks, values[len(totals) + len(counts):], strict=True):
        result[f"coverage@{kk}"] = covered / n_items
    return result


def evaluable_users(test: Interactions, train: Interactions | None = None) -> tuple[int, int]:
    """(users `evaluate` would average over, test pairs left): users with at least one test
    pair that is not a training pair. Cheap; lets a caller judge a test set before training."""
    test, _ = drop_training_pairs(test, train)
    return int((test.user_degree > 0).sum()), int(test.matrix.nnz)


def drop_training_pairs(test: Interactions, train: Interactions | None,
                        device: str | torch.device = "cpu") -> tuple[Interactions, int]:
    """`test` without the pairs that are also in `train` (they can never be recommended), and
    how many there were; the lookup runs on `device` (a binary search per test pair)."""
    if train is None:
        return test, 0
    rows, cols = test.coo
    keys = torch.from_numpy(rows * test.n_items + cols).to(device)
    in_train = contains(pair_keys(train.matrix).to(device), keys).cpu().numpy()
    if not in_train.any():
        return test, 0
    return test.with_pairs(rows, cols, ~in_train), int(in_train.sum())


def _accumulate(totals: dict, group: str, hits: torch.Tensor, n_rel: torch.Tensor,
                keep: torch.Tensor | None, ks: list[int], metrics: Mapping) -> None:
    """Each metric@k summed over the users (those in `keep`, when given) into `totals`, named
    `group_metric@k` for a slice."""
    prefix = "" if group == "all" else f"{group}_"
    for kk in ks:
        for name, fn in metrics.items():
            value = fn(hits[:, :kk], n_rel)
            if keep is not None:
                value = torch.where(keep, value, 0.0)
            totals[f"{prefix}{name}@{kk}"] = (group, value.sum())
