import numpy as np
import pandas as pd
import pytest

from recsys.data import Interactions, leave_last_out, random_split, split, temporal_split
from recsys.data.split import holdout
from recsys.errors import DataError


def pairs(data: Interactions) -> set:
    df = data.to_frame()
    return set(zip(df.user_id, df.item_id, strict=True))


def test_random_split_partitions_each_user(small_data):
    train, test = random_split(small_data, test_frac=0.2, seed=1)
    assert not pairs(train) & pairs(test)
    dropped = test.meta["test_pairs_dropped_cold_item"] + test.meta["test_pairs_dropped_cold_user"]
    assert len(pairs(train)) + len(pairs(test)) + dropped == small_data.nnz
    deg = pd.Series(small_data.user_degree, index=small_data.user_map.ids)
    test_deg = test.to_frame().groupby("user_id").size()
    # each user gives round(0.2 * degree) pairs, at most degree - 1 (before cold-item drops)
    expect = np.minimum(np.floor(deg * 0.2 + 0.5), deg - 1)
    assert (test_deg <= expect.loc[test_deg.index]).all()
    assert (expect.loc[test_deg.index] - test_deg).sum() == test.meta["test_pairs_dropped_cold_item"]
    assert (train.user_degree >= 1).all() and (train.item_popularity >= 1).all()


def test_random_split_is_deterministic_by_seed(small_data):
    a, b, c = (random_split(small_data, seed=s)[1] for s in (4, 4, 5))
    assert pairs(a) == pairs(b) and pairs(a) != pairs(c)


def test_temporal_split_cuts_globally(small_data):
    train, test = temporal_split(small_data, test_frac=0.25)
    assert train.timestamps.data.max() <= test.timestamps.data.min()
    total = test.nnz + test.meta["test_pairs_dropped_cold_item"] + test.meta["test_pairs_dropped_cold_user"]
    assert total == round(0.25 * small_data.nnz)


def test_leave_last_out_takes_each_users_latest():
    df = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c"], "item_id": [1, 2, 3, 1, 3, 2],
                       "t": [5, 9, 1, 3, 2, 7]})
    data = Interactions.from_frame(df, time_col="t")
    train, test = leave_last_out(data)
    assert pairs(test) == {("a", 2), ("b", 1)}
    assert pairs(train) == {("a", 1), ("a", 3), ("b", 3), ("c", 2)}


def test_cold_items_are_dropped_from_test_and_counted():
    df = pd.DataFrame({"user_id": ["a", "a", "b", "b", "b"], "item_id": [1, 2, 2, 1, 9],
                       "t": [1, 2, 0, 1, 5]})
    train, test = leave_last_out(Interactions.from_frame(df, time_col="t"))
    assert pairs(test) == {("a", 2)}
    assert 9 not in train.item_map.ids.tolist()
    assert test.meta["test_pairs_dropped_cold_item"] == 1


def test_holdout_keeps_id_maps(small_data):
    fit, valid = holdout(small_data, 0.1, seed=0)
    assert fit.item_map == small_data.item_map and valid.user_map == small_data.user_map
    assert fit.nnz + valid.nnz == small_data.nnz


def test_split_errors(small_data):
    no_time = Interactions(small_data.matrix, small_data.user_map, small_data.item_map)
    with pytest.raises(DataError, match="needs timestamps"):
        temporal_split(no_time)
    with pytest.raises(DataError, match="test_frac"):
        random_split(small_data, test_frac=1.5)
    with pytest.raises(DataError, match="unknown split"):
        split(small_data, "weird")
