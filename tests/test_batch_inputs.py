"""Request files of batch jobs (--history, --users): an empty id cell names no user or item."""

import numpy as np
import pytest

from pipelines.batch import read_history, user_ids_like
from recsys.data.idmap import IdMap
from recsys.errors import RecsysError


@pytest.mark.parametrize("users", [IdMap(["u1", "u2"]), IdMap([1, 2])])
@pytest.mark.parametrize("rows, needle", [
    ("u9,a\n,b\n", "column 'user_id' row 2: empty cell, expected an id"),
    ("u9,a\nu9,\n", "column 'item_id' row 2: empty cell, expected an id"),
])
def test_history_with_an_empty_id_cell_is_an_error(tmp_path, users, rows, needle):
    path = tmp_path / "h.csv"
    path.write_text("user_id,item_id\n" + rows)
    with pytest.raises(RecsysError, match=f"h.csv: {needle}"):
        read_history(path, users, IdMap(["a", "b"]))


def test_history_rows_become_one_row_per_user_and_unknown_items_are_counted(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("user_id,item_id\nNA,a\nnew,b\nNA,zz\nNA,b\n")
    ids, matrix, unknown = read_history(path, IdMap(["u1"]), IdMap(["a", "b"]))
    assert ids.tolist() == ["NA", "new"] and unknown == 1  # 'NA' is an id like any other
    np.testing.assert_array_equal(matrix.toarray(), [[1, 1], [0, 1]])


def test_requested_user_ids_take_the_models_id_type():
    assert user_ids_like(["7", "8"], True, "users.csv").tolist() == [7, 8]
    assert user_ids_like([7, "x"], False, "users.csv").tolist() == ["7", "x"]
    with pytest.raises(RecsysError, match="users.csv: user id 'x' \\(row 2\\) is not an integer"):
        user_ids_like(["7", "x"], True, "users.csv")
    with pytest.raises(RecsysError, match="users.csv: column 'user_id' row 1: empty cell"):
        user_ids_like(["", "x"], False, "users.csv")
