import numpy as np
import pytest

from recsys.data import IdMap
from recsys.data.idmap import normalize_ids
from recsys.errors import DataError


def test_integer_strings_become_ints_but_leading_zeros_stay_text():
    assert normalize_ids(["1", "20", "-3"]).tolist() == [1, 20, -3]
    out = normalize_ids(["007", "1"])
    assert out.dtype == object and out.tolist() == ["007", "1"]


def test_from_values_is_sorted_and_round_trips():
    m = IdMap.from_values(["b", "a", "c", "a"])
    assert m.ids.tolist() == ["a", "b", "c"]
    idx = m.index_of(["c", "a", "zz"])
    assert idx.tolist() == [2, 0, -1]
    assert m.to_ids(idx[:2]).tolist() == ["c", "a"]


def test_int_map_accepts_ids_read_as_text():
    m = IdMap.from_values([10, 3, 7])
    assert m.index_of(["7", "10", "x"]).tolist() == [1, 2, -1]
    s = IdMap.from_values(["u1", "u2"])
    assert s.index_of([1]).tolist() == [-1]


def test_json_round_trip(tmp_path):
    for ids in ([5, 1, 9], ["x", "007", "y"]):
        m = IdMap.from_values(ids)
        m.save(tmp_path / "m.json")
        back = IdMap.load(tmp_path / "m.json")
        assert back == m and back.ids.tolist() == m.ids.tolist()


def test_missing_and_duplicate_ids_are_errors():
    with pytest.raises(DataError, match="row 1"):
        normalize_ids(["a", None])
    with pytest.raises(DataError, match="duplicated"):
        IdMap(np.array(["a", "a"], dtype=object))
