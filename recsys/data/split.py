"""Train/test splits of Interactions, deterministic by seed.

Every split returns train and test on the *train* support: users and items that have no
training pair are removed from both, and their test pairs are counted in `test.meta`
(`test_pairs_dropped_cold_user`, `test_pairs_dropped_cold_item`), never silently lost.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Literal, NamedTuple

import numpy as np

from recsys.data.interactions import Interactions
from recsys.errors import DataError

log = logging.getLogger("recsys")

SplitName = Literal["random", "temporal", "leave-last"]


class Split(NamedTuple):
    train: Interactions
    test: Interactions


def split(data: Interactions, how: SplitName = "random", *, test_frac: float = 0.2,
          seed: int = 0) -> Split:
    """Split by name: per-user `random` holdout, global `temporal` cut-off, or `leave-last`.

    `test_frac` must lie in (0, 1) and `seed` be >= 0 for every split, also where unused.
    """
    _check_frac(test_frac)
    _check_seed(seed)
    if how == "random":
        return random_split(data, test_frac=test_frac, seed=seed)
    if how == "temporal":
        return temporal_split(data, test_frac=test_frac)
    if how == "leave-last":
        return leave_last_out(data, seed=seed)
    raise DataError(f"unknown split {how!r}: use random, temporal or leave-last")


def random_split(data: Interactions, *, test_frac: float = 0.2, seed: int = 0) -> Split:
    """Per user, a random `test_frac` of their items (rounded) goes to test; one item stays in train."""
    return _finish(data, _random_holdout_mask(data, test_frac, seed),
                   f"random(test_frac={test_frac}, seed={seed})")


def holdout(data: Interactions, frac: float, *, seed: int = 0) -> Split:
    """Like `random_split` but both parts keep `data`'s id maps (for validation inside a fit)."""
    rows, cols = data.coo
    is_valid = _random_holdout_mask(data, frac, seed)
    rule = f"holdout(frac={frac}, seed={seed})"
    return Split(data.with_pairs(rows, cols, ~is_valid, split=rule, part="fit"),
                 data.with_pairs(rows, cols, is_valid, split=rule, part="valid"))


def _random_holdout_mask(data: Interactions, frac: float, seed: int) -> np.ndarray:
    _check_frac(frac)
    _check_seed(seed)
    rows, _ = data.coo
    rank = _rank_within_user(data, np.random.default_rng(seed).random(len(rows)))
    deg = data.user_degree[rows]
    return rank < np.minimum(np.floor(deg * frac + 0.5), deg - 1)


def temporal_split(data: Interactions, *, test_frac: float = 0.2) -> Split:
    """Pairs at or after a cut-off time go to test, the others to train.

    Pairs with the same timestamp always fall on the same side, so the cut-off is the
    distinct timestamp whose test share is closest to `test_frac` (the larger share on a tie;
    train and test both non-empty). `test.meta["test_frac_reached"]` is the share reached.
    """
    _check_frac(test_frac)
    ts = _timestamps(data, "temporal")
    times = np.unique(ts)
    if len(times) < 2:
        raise DataError("the temporal split needs at least two distinct timestamps")
    # test share of each cut-off time t (test = ts >= t), for every distinct t but the first
    n_test = len(ts) - np.searchsorted(np.sort(ts), times[1:], side="left")
    cut = times[1:][np.argmin(np.abs(n_test - test_frac * len(ts)))]
    return _finish(data, ts >= cut, f"temporal(test_frac={test_frac})")


def leave_last_out(data: Interactions, *, seed: int = 0) -> Split:
    """Each user's latest pair goes to test (users with at least two); ties broken by seed."""
    _check_seed(seed)
    rows, _ = data.coo
    ts = _timestamps(data, "leave-last")
    tiebreak = np.random.default_rng(seed).random(len(rows))
    # rank by time with random tie-breaks: lexsort keys are (tiebreak, ts), ts primary
    rank = _rank_within_user(data, np.lexsort((tiebreak, ts)).argsort())
    deg = data.user_degree[rows]
    is_test = (rank == deg - 1) & (deg >= 2)
    return _finish(data, is_test, f"leave-last(seed={seed})")


def _check_frac(test_frac: float) -> None:
    if not 0 < test_frac < 1:
        raise DataError(f"test_frac must be in (0, 1), got {test_frac}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}")


def _timestamps(data: Interactions, name: str) -> np.ndarray:
    if data.timestamps is None:
        raise DataError(f"the {name} split needs timestamps (give --time-col)")
    return data.timestamps.data


def _rank_within_user(data: Interactions, keys: np.ndarray) -> np.ndarray:
    """Each pair's rank among its user's pairs when ordered by `keys`."""
    rows, _ = data.coo
    order = np.lexsort((keys, rows))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - data.matrix.indptr[rows[order]]
    return rank


def _finish(data: Interactions, is_test: np.ndarray, rule: str) -> Split:
    rows, cols = data.coo
    train = data.with_pairs(rows, cols, ~is_test, split=rule, part="train")
    test = data.with_pairs(rows, cols, is_test, split=rule, part="test")
    users = np.flatnonzero(train.user_degree > 0)
    items = np.flatnonzero(train.item_popularity > 0)
    cold_user = is_test & (train.user_degree[rows] == 0)
    cold_item = is_test & ~cold_user & (train.item_popularity[cols] == 0)
    report = {"test_frac_reached": round(float(is_test.mean()), 6),
              "test_pairs_dropped_cold_user": int(cold_user.sum()),
              "test_pairs_dropped_cold_item": int(cold_item.sum())}
    if test.nnz == report["test_pairs_dropped_cold_user"] + report["test_pairs_dropped_cold_item"]:
        raise DataError(f"the split {rule} leaves no test pair of a user and item seen in train "
                        f"({data.nnz} pairs; {int(is_test.sum())} sent to test, "
                        f"{report['test_pairs_dropped_cold_user']} of them of users and "
                        f"{report['test_pairs_dropped_cold_item']} of items absent from train)")
    if cold_user.any() or cold_item.any():
        log.info("split %s: %d test pairs of users and %d of items absent from train dropped",
                 rule, report["test_pairs_dropped_cold_user"], report["test_pairs_dropped_cold_item"])
    train, test = train.subset(users, items), test.subset(users, items)
    return Split(train, replace(test, meta={**test.meta, **report}))
