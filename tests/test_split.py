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


def test_temporal_split_keeps_equal_timestamps_on_one_side():
    # pair i of 10 at times 1,1,1,2,2,3,3,3,3,4; ids deliberately out of time order
    ts = [3, 1, 4, 3, 1, 2, 3, 1, 3, 2]
    df = pd.DataFrame({"user_id": [9, 0, 5, 5, 9, 0, 1, 5, 0, 9], "item_id": [1, 2, 2, 1, 2, 1, 2, 0, 0, 0],
                       "t": ts})
    data = Interactions.from_frame(df, time_col="t")
    # target test share 0.3 = 3 pairs; a cut at t>=3 gives 5, at t>=4 gives 1: the tie goes to 5
    train, test = temporal_split(data, test_frac=0.3)
    assert test.meta["test_frac_reached"] == 0.5
    assert train.timestamps.data.max() == 2 and test.timestamps.data.min() >= 3
    # a cut that cannot hit the share exactly still never separates equal times
    for frac in (0.1, 0.2, 0.25, 0.45, 0.6, 0.75, 0.9):
        train, test = temporal_split(data, test_frac=frac)
        dropped = test.meta["test_pairs_dropped_cold_user"] + test.meta["test_pairs_dropped_cold_item"]
        cut_at = {0.1: 4, 0.2: 4, 0.25: 4, 0.45: 3, 0.6: 2, 0.75: 2, 0.9: 2}[frac]  # 0.6: a tie, 7 wins
        assert train.timestamps.data.max() < cut_at
        assert test.nnz + dropped == sum(t >= cut_at for t in ts)
        assert test.meta["test_frac_reached"] == sum(t >= cut_at for t in ts) / 10


def test_temporal_split_needs_two_distinct_times():
    df = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 2], "t": [5, 5, 5]})
    with pytest.raises(DataError, match="at least two distinct timestamps"):
        temporal_split(Interactions.from_frame(df, time_col="t"))


@pytest.mark.parametrize("how", ["random", "temporal", "leave-last"])
def test_every_split_checks_test_frac_and_seed(small_data, how):
    for frac in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(DataError, match="test_frac must be in"):
            split(small_data, how, test_frac=frac)
    for seed in (-1, 1.5, True):
        with pytest.raises(DataError, match=f"seed must be an integer >= 0, got {seed!r}"):
            split(small_data, how, seed=seed)


def test_random_split_reports_the_share_reached():
    # 2 users with 3 items: round(0.5 * 3) = 2 test items each (one stays in train) -> 4 of 6
    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [1, 2, 3, 1, 2, 3]})
    _, test = random_split(Interactions.from_frame(df), test_frac=0.5, seed=0)
    assert test.meta["test_frac_reached"] == round(4 / 6, 6)
