import pandas as pd
import pytest

from recsys.data import read_atomic, read_events, read_movielens, read_table
from recsys.data.files import read_interactions
from recsys.errors import DataError


def test_csv_keeps_text_ids_and_parquet_matches(tmp_path):
    (tmp_path / "a.csv").write_text("user_id,item_id,rating\n007,1,4\n7,2,5\n")
    df = read_table(tmp_path / "a.csv")
    assert df["user_id"].tolist() == ["007", "7"]
    data = read_interactions(tmp_path / "a.csv")
    assert sorted(data.user_map.ids.tolist()) == ["007", "7"]
    data.to_frame().to_parquet(tmp_path / "a.parquet")
    again = read_interactions(tmp_path / "a.parquet")
    assert again.user_map == data.user_map and again.item_map == data.item_map
    assert again.matrix.toarray().tolist() == data.matrix.toarray().tolist()


def test_movielens_formats(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t100\n2\t10\t3\t101\n")
    (tmp_path / "ratings.dat").write_text("1::10::4::100\n2::11::5::102\n")
    (tmp_path / "ml20").mkdir()
    (tmp_path / "ml20" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.5,100\n")
    a = read_movielens(tmp_path / "u.data")
    b = read_movielens(tmp_path / "ratings.dat")
    c = read_events(tmp_path / "ml20" / "ratings.csv")
    for df in (a, b, c):
        assert list(df.columns[:4]) == ["user_id", "item_id", "rating", "timestamp"]
    assert a["item_id"].tolist() == ["10", "10"] and b["rating"].tolist() == [4, 5]
    assert c["rating"].tolist() == [4.5]
    assert len(read_movielens(tmp_path)) == 2  # a folder: u.data is found first


def test_recbole_atomic_file(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = read_atomic(path)
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"]
    assert df["user_id"].tolist() == ["196", "186"] and df["rating"].tolist() == [3.0, 3.0]
    (tmp_path / "bad.inter").write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match="'user_id' has no known RecBole type"):
        read_atomic(tmp_path / "bad.inter")


def test_unreadable_files_get_clear_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("user_id,item_id\n")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="header.csv: file has no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(DataError, match="unknown file type"):
        read_table(tmp_path / "x.json")
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    pd.DataFrame({"user": [1]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet: missing column\(s\) user_id, item_id"):
        read_interactions(tmp_path / "p.parquet")
