"""Bad input files and flags: each is exactly one `recsys: error:` line (file, column, 1-based
data row, value) and exit 2; the accepted neighbours of each fault give the right values."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from recsys.data import Interactions, read_events, read_table
from recsys.data.files import read_interactions

WEIGHT_HINT = ("is not a positive weight (weights must be > 0; to keep only the rows rated at "
               "least X, as positives, give --min-rating X)")
ROWS_60 = "".join(f"u{i},i{i % 7},{1000 + i}\n" if i != 49 else f"u{i},i1,\n" for i in range(1, 61))


def parquet(table: pa.Table):
    return lambda path: pq.write_table(table, path)


# (case id, file name, content: text, bytes or a writer, extra flags, error after "{file}: ")
FILE_CASES = [
    ("negative weight", "r.csv", "user_id,item_id,rating\na,x,5\nb,y,-1\n", ["--rating-col", "rating"],
     f"column 'rating' row 2: -1 {WEIGHT_HINT}"),
    ("zero weight", "r.csv", "user_id,item_id,rating\na,x,0\nb,y,2\n", ["--rating-col", "rating"],
     f"column 'rating' row 1: 0 {WEIGHT_HINT}"),
    ("negative weight in parquet", "r.parquet",
     parquet(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [1.5, -2.0]})),
     ["--rating-col", "rating"], f"column 'rating' row 2: -2 {WEIGHT_HINT}"),
    ("header repeated mid-file", "h.csv", "user_id,item_id\na,x\nb,y\nuser_id,item_id\nc,z\n", [],
     "row 3 repeats the header 'user_id,item_id' (files concatenated?)"),
    ("header repeated in a tsv", "h.tsv", "user_id\titem_id\na\tx\nuser_id\titem_id\n", [],
     "row 2 repeats the header 'user_id\\titem_id' (files concatenated?)"),
    ("duplicated column name", "d.csv", "user_id,item_id,rating,rating\na,x,1,5\n",
     ["--rating-col", "rating"], "column name 'rating' appears twice in the header"),
    ("duplicated column in parquet", "d.parquet",
     parquet(pa.Table.from_arrays([pa.array(["a"]), pa.array(["x"]), pa.array(["y"])],
                                  names=["user_id", "item_id", "user_id"])), [],
     "column name 'user_id' appears twice in the header"),
    ("list ids in parquet", "l.parquet",
     parquet(pa.table({"user_id": pa.array([[1, 1], [2]]), "item_id": ["x", "y"]})), [],
     "column 'user_id' row 1: [1, 1] is not an id (ids are integers or text; the column holds "
     "mixed values)"),
    ("struct ids in parquet", "s.parquet",
     parquet(pa.table({"user_id": ["a", "b"], "item_id": pa.array([{"k": 1}, {"k": 2}])})), [],
     "column 'item_id' row 1: {'k': 1} is not an id (ids are integers or text; the column holds "
     "mixed values)"),
    ("boolean ids in parquet", "b.parquet",
     parquet(pa.table({"user_id": ["a", "b"], "item_id": [True, False]})), [],
     "column 'item_id' row 1: True is not an id (ids are integers or text; the column holds "
     "boolean values)"),
    ("bytes ids in parquet", "y.parquet",
     parquet(pa.table({"user_id": [b"a", b"b"], "item_id": [1, 2]})), [],
     "column 'user_id' row 1: b'a' is not an id (ids are integers or text; the column holds "
     "bytes values)"),
    ("empty id cell", "e.csv", "user_id,item_id\na,x\n,y\n", [],
     "column 'user_id' row 2: empty cell, expected an id"),
    ("null id in parquet", "n.parquet", parquet(pa.table({"user_id": ["a", None], "item_id": [1, 2]})),
     [], "column 'user_id' row 2: empty cell, expected an id"),
    ("empty timestamp at data row 49", "t.csv", "user_id,item_id,timestamp\n" + ROWS_60, [],
     "column 'timestamp' row 49: empty cell, expected a time"),
    ("text in an ISO time column", "t.csv", "user_id,item_id,timestamp\na,x,2020-01-01\nb,y,soon\n",
     [], "column 'timestamp' row 2: 'soon' is not a time (a number, or ISO 8601 like the first value)"),
    ("text in a numeric time column", "t.csv", "user_id,item_id,timestamp\na,x,17\nb,y,2020-01-01\n",
     [], "column 'timestamp' row 2: '2020-01-01' is not a finite number"),
    ("NA is not a rating", "r.csv", "user_id,item_id,rating\na,x,NA\n", ["--rating-col", "rating"],
     "column 'rating' row 1: 'NA' is not a finite number"),
    ("infinite rating", "r.csv", "user_id,item_id,rating\na,x,2\nb,x,inf\n", ["--rating-col", "rating"],
     "column 'rating' row 2: 'inf' is not a finite number"),
    ("a row with a missing field", "f.csv", "user_id,item_id,rating\na,x,1\nb,y\n",
     ["--rating-col", "rating"], "row 2: 2 field(s), expected 3 separated by ',': 'b,y'"),
    ("a row with an extra field", "f.csv", "user_id,item_id\na,x\n\nb,y,z\n", [],
     "row 2: 3 field(s), expected 2 separated by ',': 'b,y,z'"),
    ("not UTF-8", "b.csv", b"user_id,item_id\na,x\n\xff\xfe,y\n", [],
     "row 2 is not UTF-8 text (a binary file?)"),
    ("NUL bytes", "b.csv", b"user_id,item_id\na,x\nb,y\n\x00\x01,z\n", [],
     "row 3 holds binary content (a NUL byte), not text"),
    ("a parquet file named .csv", "p.csv", b"PAR1\x15\x04\x15\x80\xfa\x01", [],
     "the header is not UTF-8 text (a binary file?)"),
    ("a text file named .parquet", "t.parquet", "user_id,item_id\na,x\n", [],
     "not a readable Parquet file: Parquet magic bytes not found in footer. Either the file is "
     "corrupted or this is not a parquet file."),
    ("recbole em dash in a float column", "x.inter",
     "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\t\u2014\n", ["--rating-col", "rating"],
     "column 'rating' row 2: '\u2014' is not a number"),
    ("recbole empty float cell", "x.inter",
     "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\t\n", ["--rating-col", "rating"],
     "column 'rating' row 2: empty cell, expected a finite number"),
    ("recbole short line", "x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\n", [],
     "row 2: 2 field(s), expected 3 separated by '\\t': '1\\t3'"),
    ("recbole header repeated", "x.inter",
     "user_id:token\titem_id:token\n1\t2\nuser_id:token\titem_id:token\n", [],
     "row 2 repeats the header 'user_id:token\\titem_id:token' (files concatenated?)"),
    ("movielens u.data with commas", "u.data", "1,10,4,881250949\n", [],
     "row 1: 1 field(s), expected 4 separated by '\\t': '1,10,4,881250949'"),
    ("movielens u.data extra field", "u.data", "1\t10\t4\t881250949\n2\t10\t3\t881250950\t7\n", [],
     "row 2: 5 field(s), expected 4 separated by '\\t': '2\\t10\\t3\\t881250950\\t7'"),
    ("movielens ratings.dat with tabs", "ratings.dat", "1::10::4::100\n2\t11\t5\t102\n", [],
     "row 2: 1 field(s), expected 4 separated by '::': '2\\t11\\t5\\t102'"),
    ("movielens ratings.dat extra field", "ratings.dat", "1::10::4::100\n2::11::5::102::9\n", [],
     "row 2: 5 field(s), expected 4 separated by '::': '2::11::5::102::9'"),
    ("movielens binary", "u.data", b"1\t10\t4\t100\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n", [],
     "row 2 is not UTF-8 text (a binary file?)"),
    ("movielens bad rating", "u.data", "1\t10\t4\t100\n2\t10\tfour\t100\n", [],
     "column 'rating' row 2: 'four' is not a finite number"),
    ("min-rating keeps no row", "r.csv", "user_id,item_id,rating\na,x,1\nb,y,5\n", ["--min-rating", "6"],
     "no row is rated at least 6, nothing is left (column 'rating' ranges from 1 to 5)"),
    ("a folder as input", "folder", None, [], "no MovieLens ratings file (u.data, ratings.dat, ratings.csv)"),
    ("one column for users and items", "u.csv", "user_id,item_id\na,x\n", ["--item-col", "user_id"],
     "the user and item columns must differ, both are 'user_id'"),
]


@pytest.mark.parametrize("name, content, flags, error", [c[1:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_file_is_one_error_line(tmp_path, capsys, name, content, flags, error):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)
    code = main(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), *flags])
    assert code == 2
    assert capsys.readouterr().err == f"recsys: error: {path}: {error}\n"
    assert not (tmp_path / "out").exists()


FLAG_CASES = [
    (["--min-rating", "nan"], "argument --min-rating: 'nan' is not a finite number"),
    (["--min-rating", "inf"], "argument --min-rating: 'inf' is not a finite number"),
    (["--seed", "-1"], "argument --seed: -1 is not an integer >= 0"),
    (["--seed", "1.5"], "argument --seed: '1.5' is not an integer"),
    *[(["--split", how, "--test-frac", frac], f"argument --test-frac: '{frac}' is not in (0, 1)")
      for how in ("random", "temporal", "leave-last") for frac in ("0", "1", "1.5", "-0.2", "nan")],
]


@pytest.mark.parametrize("flags, error", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_prepare_flag_is_one_error_line_before_reading(tmp_path, capsys, flags, error):
    missing = tmp_path / "never-read.csv"  # the flag is refused before the file is looked at
    code = _exit_code(["data", "prepare", "--input", str(missing), "--out", str(tmp_path / "o"), *flags])
    assert code == 2
    assert capsys.readouterr().err == f"recsys: error: {error} (see recsys data prepare --help)\n"


@pytest.mark.parametrize("argv, error", [
    (["recommend", "--model", "m", "--out", "r.parquet", "--chunk-users", "0"],
     "argument --chunk-users: 0 is not a positive integer (see recsys recommend --help)"),
    (["recommend", "--model", "m", "--out", "r.parquet", "--chunk-users", "-5"],
     "argument --chunk-users: -5 is not a positive integer (see recsys recommend --help)"),
    (["serve", "--model", "m", "--port", "99999"],
     "argument --port: 99999 is not a port in 1..65535 (see recsys serve --help)"),
    (["serve", "--model", "m", "--port", "0"],
     "argument --port: 0 is not a port in 1..65535 (see recsys serve --help)"),
    (["serve", "--model", "m", "--max-k", "0"],
     "argument --max-k: 0 is not a positive integer (see recsys serve --help)"),
    (["serve", "--model", "m", "--workers", "0"],
     "argument --workers: 0 is not a positive integer (see recsys serve --help)"),
    (["serve", "--model", "m", "--graceful-timeout", "-1"],
     "argument --graceful-timeout: '-1' is not a number >= 0 (see recsys serve --help)"),
])
def test_sizes_must_be_positive(capsys, argv, error):
    assert _exit_code(argv) == 2
    assert capsys.readouterr().err == f"recsys: error: {error}\n"


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# ---- the accepted neighbours of each fault --------------------------------------------------
def prepare(tmp_path, path, *flags) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    out = tmp_path / "out"
    assert main(["data", "prepare", "--input", str(path), "--out", str(out), *map(str, flags)]) == 0
    return (pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "test.parquet"),
            json.loads((out / "meta.json").read_text()))


def test_na_and_null_are_ids_and_keep_their_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("user_id,item_id\nNA,null\nNA,None\nnull,NA\nnan,null\n")
    data = read_interactions(path)
    assert sorted(data.user_map.ids) == ["NA", "nan", "null"]
    assert sorted(data.item_map.ids) == ["NA", "None", "null"]
    assert data.nnz == 4
    # and through a prepared Parquet file, where they stay text
    train, test, _ = prepare(tmp_path, path, "--test-frac", 0.4)
    pairs = set(zip(train.user_id, train.item_id, strict=True)) | set(
        zip(test.user_id, test.item_id, strict=True))
    assert pairs == {("NA", "null"), ("NA", "None"), ("null", "NA"), ("nan", "null")}


def test_min_rating_drops_dislikes_and_counts_them(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,rating\na,x,-1\na,y,0\na,z,4\nb,x,5\nb,z,3\nc,x,-2\n")
    data = Interactions.from_frame(read_table(path), rating_col="rating", min_rating=3)
    assert data.meta["dropped_below_min_rating"] == 3
    assert data.to_frame()[["user_id", "item_id", "rating"]].values.tolist() == [
        ["a", "z", 1.0], ["b", "x", 1.0], ["b", "z", 1.0]]
    assert data.item_popularity.tolist() == [1, 2]  # x: only b (a's -1 and c's -2 are gone)


def test_positive_weights_are_summed(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("user_id,item_id,rating\na,x,0.5\na,x,2\nb,x,1\n")
    data = read_interactions(path)
    assert data.matrix.toarray().tolist() == [[2.5], [1.0]]


def test_timestamps_iso_numbers_and_parquet_datetimes_agree(tmp_path):
    (tmp_path / "iso.csv").write_text("user_id,item_id,timestamp\na,x,1970-01-02\nb,x,1970-01-01T00:01:00Z\n")
    (tmp_path / "num.csv").write_text("user_id,item_id,timestamp\na,x,86400\nb,x,60\n")
    times = pd.to_datetime(["1970-01-02", "1970-01-01 00:01"], format="ISO8601")
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "x"], "timestamp": times}).to_parquet(
        tmp_path / "dt.parquet")
    for name in ("iso.csv", "num.csv", "dt.parquet"):
        data = Interactions.from_frame(read_table(tmp_path / name), time_col="timestamp")
        assert data.timestamps.toarray().ravel().tolist() == [86400.0, 60.0], name


def test_quoted_fields_and_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'\xef\xbb\xbfuser_id,item_id\n"a,b",x\n"say ""hi""",y\n')
    frame = read_table(path)
    assert frame.columns.tolist() == ["user_id", "item_id"]
    assert frame["user_id"].tolist() == ["a,b", 'say "hi"']


def test_movielens_and_recbole_values(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::4::978300760\n2::007::5::978302109\n")
    frame = read_events(tmp_path / "ratings.dat")
    assert frame.values.tolist() == [["1", "10", 4.0, 978300760.0], ["2", "007", 5.0, 978302109.0]]
    (tmp_path / "x.item").write_text("item_id:token\tprice:float\ttitle:token_seq\n"
                                     "1\t\tToy Story\n2\t2.5\tHeat\n")
    items = read_events(tmp_path / "x.item")
    assert np.isnan(items["price"][0]) and items["price"][1] == 2.5
    assert items["title"].tolist() == ["Toy Story", "Heat"]


def test_a_split_without_test_pairs_is_an_error_not_an_empty_file(tmp_path, capsys):
    path = tmp_path / "one.csv"  # every user has one item: a random split keeps it in train
    path.write_text("user_id,item_id\na,x\nb,y\nc,x\n")
    assert main(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "recsys: error: the split random(test_frac=0.2, seed=0) leaves no test pair of a user and "
        "item seen in train (3 pairs; 0 sent to test, 0 of them of users and 0 of items absent "
        "from train)\n")
    assert not (tmp_path / "out").exists()
