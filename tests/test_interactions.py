import numpy as np
import pandas as pd
import pytest

from recsys.data import IdMap, Interactions
from recsys.errors import DataError


def frame(**cols):
    return pd.DataFrame(cols)


def test_duplicates_sum_and_max_by_rule():
    df = frame(user_id=["a", "a", "a", "b"], item_id=["x", "x", "y", "x"], rating=[2.0, 5.0, 1.0, 3.0])
    summed = Interactions.from_frame(df, rating_col="rating")
    maxed = Interactions.from_frame(df, rating_col="rating", duplicates="max")
    assert summed.matrix.toarray().tolist() == [[7.0, 1.0], [3.0, 0.0]]
    assert maxed.matrix.toarray().tolist() == [[5.0, 1.0], [3.0, 0.0]]
    assert summed.meta["duplicate_rows_combined"] == 1


def test_events_without_rating_count_and_threshold_makes_positives():
    df = frame(user_id=[1, 1, 2, 2], item_id=[1, 1, 1, 2], rating=[4, 5, 2, 4])
    counts = Interactions.from_frame(df)
    assert counts.matrix.toarray().tolist() == [[2.0, 0.0], [1.0, 1.0]]
    pos = Interactions.from_frame(df, rating_col="rating", min_rating=4)
    assert pos.matrix.toarray().tolist() == [[2.0, 0.0], [0.0, 1.0]]
    assert pos.meta["dropped_below_min_rating"] == 1


def test_levels_and_timestamps_take_the_max():
    df = frame(user_id=["u", "u", "v"], item_id=["i", "i", "i"], level=[1, 3, 2], ts=[10, 5, 7])
    data = Interactions.from_frame(df, level_col="level", time_col="ts")
    assert data.levels.toarray().tolist() == [[3], [2]]
    assert data.timestamps.toarray().tolist() == [[10.0], [7.0]]
    assert data.levels.dtype == np.int8


def test_datetime_strings_are_parsed():
    df = frame(user_id=["u", "v"], item_id=["i", "i"], t=["2024-01-01", "2024-01-02"])
    data = Interactions.from_frame(df, time_col="t")
    assert data.timestamps.data[1] - data.timestamps.data[0] == 86400


def test_unknown_ids_under_given_maps_are_dropped_and_counted():
    df = frame(user_id=["a", "zz", "b", "a"], item_id=["x", "x", "q", "y"])
    data = Interactions.from_frame(df, user_map=IdMap.from_values(["a", "b"]),
                                   item_map=IdMap.from_values(["x", "y"]))
    assert data.nnz == 2
    assert data.meta["dropped_unknown_user_rows"] == 1
    assert data.meta["dropped_unknown_item_rows"] == 1


def test_to_frame_round_trip(small_data):
    back = Interactions.from_frame(small_data.to_frame(), rating_col="rating", time_col="timestamp")
    assert (back.matrix != small_data.matrix).nnz == 0
    assert back.user_map == small_data.user_map and back.item_map == small_data.item_map


def test_derived_views(small_data):
    assert small_data.item_popularity.sum() == small_data.nnz
    assert len(small_data.item_popularity) == small_data.n_items
    ei = small_data.edge_index
    assert ei.shape == (2, 2 * small_data.nnz) and int(ei.max()) < small_data.n_users + small_data.n_items


@pytest.mark.parametrize("df, kwargs, message", [
    (frame(user=["a"], item_id=["x"]), {}, "missing column.*user_id"),
    (frame(user_id=["a", None], item_id=["x", "y"]), {}, "'user_id' row 2: empty cell"),
    (frame(user_id=["a", "b"], item_id=["x", "y"], rating=["4", "good"]), {"rating_col": "rating"},
     "'rating' row 2: 'good'"),
    (frame(user_id=["a"], item_id=["x"], rating=[float("nan")]), {"rating_col": "rating"}, "row 1"),
    (frame(user_id=["a"], item_id=["x"], level=[0]), {"level_col": "level"}, "row 1: 0 is not an integer"),
    (frame(user_id=[], item_id=[]), {}, "no rows"),
])
def test_bad_input_names_the_problem(df, kwargs, message):
    with pytest.raises(DataError, match=message):
        Interactions.from_frame(df, **kwargs)
