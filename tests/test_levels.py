"""Graded feedback: level columns, named levels, rating thresholds, the CLI and meta.json."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from recsys.data import Interactions
from recsys.data.files import read_interactions
from recsys.data.levels import parse_levels, parse_thresholds
from recsys.data.simulate import simulate
from recsys.data.split import random_split
from recsys.errors import DataError

EVENTS = pd.DataFrame({
    "user_id": ["a", "a", "a", "b", "b", "c"],
    "item_id": ["x", "x", "y", "x", "y", "y"],
    "event": ["view", "purchase", "view", "cart", "view", "cart"],
})


def test_event_names_map_to_their_order_and_the_highest_per_pair_is_kept():
    data = Interactions.from_frame(EVENTS, level_col="event", level_names="view<cart<purchase")
    assert data.level_names == ("view", "cart", "purchase")
    assert data.levels.toarray().tolist() == [[3, 1], [2, 1], [0, 2]]
    assert data.meta["levels"] == {"view": 2, "cart": 2, "purchase": 1}
    back = data.to_frame()
    assert back["level"].cat.categories.tolist() == ["view", "cart", "purchase"]


def test_integer_levels_default_to_numbered_names():
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "level": ["1", "4", "2"]})
    data = Interactions.from_frame(df, level_col="level")
    assert data.level_names == ("1", "2", "3", "4")
    assert data.to_frame()["level"].tolist() == [1, 4, 2]  # unnamed levels stay integers


def test_rating_thresholds_drop_below_the_first_and_count():
    df = pd.DataFrame({"user_id": list("aaaaab"), "item_id": list("pqrstp"),
                       "rating": [1, 2.5, 3, 4.5, 5, 4]})
    data = Interactions.from_frame(df, rating_col="rating", levels_from_rating="3,4,5")
    assert data.meta["dropped_below_min_rating"] == 2 and data.nnz == 4
    assert data.level_names == ("rating_3", "rating_4", "rating_5")
    frame = data.to_frame().set_index(["user_id", "item_id"])["level"].cat.codes + 1
    assert frame.to_dict() == {("a", "r"): 1, ("a", "s"): 2, ("a", "t"): 3, ("b", "p"): 2}
    assert (data.matrix.data == 1).all()  # graded positives weigh 1, like --min-rating


@pytest.mark.parametrize("kwargs, message", [
    ({"level_col": "event", "level_names": "view<cart"}, r"events.csv: column 'event' row 2: "
                                                         r"'purchase' is not a level of view<cart"),
    ({"level_col": "event"}, r"'event' row 1: 'view' is not an integer level in 1..127"),
    ({"level_col": "event", "level_names": "view<view"}, "appears twice"),
    ({"level_col": "event", "level_names": "view<<cart"}, "weakest first"),
    ({"level_names": "a<b"}, "without a level column"),
])
def test_bad_level_input_names_file_column_row_and_value(kwargs, message):
    with pytest.raises(DataError, match=message):
        Interactions.from_frame(EVENTS, source="events.csv", **kwargs)


def test_integer_level_above_the_named_levels_is_an_error():
    df = EVENTS.assign(event=["1", "2", "3", "1", "4", "2"])
    with pytest.raises(DataError, match=r"row 5: '4' is not a level in 1..3 \(view<cart<purchase\)"):
        Interactions.from_frame(df, level_col="event", level_names=["view", "cart", "purchase"])


def test_parsers():
    assert parse_levels(" click < cart<buy ") == ("click", "cart", "buy")
    assert parse_thresholds("1,4,5") == (1.0, 4.0, 5.0)
    with pytest.raises(DataError, match="increasing"):
        parse_thresholds("4,3")
    with pytest.raises(DataError, match="increasing"):
        parse_thresholds("three")


def test_names_survive_splits_subsets_and_a_parquet_round_trip(tmp_path):
    sim = simulate(200, 80, 2000, seed=2)
    assert sim.train.level_names == ("click", "cart", "purchase")
    train, test = random_split(sim.train, test_frac=0.3, seed=0)
    assert train.level_names == test.level_names == ("click", "cart", "purchase")
    assert train.subset(np.arange(5)).level_names == train.level_names
    train.to_frame().to_parquet(tmp_path / "t.parquet")
    back = read_interactions(tmp_path / "t.parquet")
    assert back.level_names == train.level_names
    assert (back.levels != train.levels).nnz == 0


def test_a_csv_of_level_names_needs_the_order(tmp_path):
    EVENTS.rename(columns={"event": "level"}).to_csv(tmp_path / "t.csv", index=False)
    back = read_interactions(tmp_path / "t.csv", level_names=parse_levels("view<cart<purchase"))
    assert back.levels.toarray().max() == 3
    with pytest.raises(DataError, match="t.csv: column 'level' row 1: 'view' is not an integer"):
        read_interactions(tmp_path / "t.csv")


def test_prepare_with_event_levels_writes_counts_to_meta(tmp_path, capsys):
    EVENTS.to_csv(tmp_path / "events.csv", index=False)
    out = tmp_path / "prep"
    assert main(["data", "prepare", "--input", str(tmp_path / "events.csv"), "--level-col",
                 "event", "--levels", "view<cart<purchase", "--test-frac", "0.4",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    levels = meta["levels"]
    assert levels["names"] == ["view", "cart", "purchase"]
    assert levels["all"] == {"view": 2, "cart": 2, "purchase": 1}
    for part in ("train", "test"):
        assert sum(levels[part].values()) == meta[f"{part}_pairs"]
    train = read_interactions(out / "train.parquet")
    assert train.level_names == ("view", "cart", "purchase")


def test_prepare_levels_from_rating_and_bad_event_exit_2(tmp_path, capsys):
    df = pd.DataFrame({"user_id": list("aaabbb"), "item_id": list("pqrpqr"),
                       "rating": [1, 3, 5, 4, 4, 2]})
    df.to_csv(tmp_path / "r.csv", index=False)
    assert main(["data", "prepare", "--input", str(tmp_path / "r.csv"), "--levels-from-rating",
                 "3,4,5", "--test-frac", "0.3", "--out", str(tmp_path / "p")]) == 0
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["source"]["dropped_below_min_rating"] == 2
    assert meta["levels"]["all"] == {"rating_3": 1, "rating_4": 2, "rating_5": 1}
    capsys.readouterr()
    EVENTS.to_csv(tmp_path / "events.csv", index=False)
    code = main(["data", "prepare", "--input", str(tmp_path / "events.csv"), "--level-col",
                 "event", "--levels", "view<purchase", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"recsys: error: {tmp_path / 'events.csv'}: column 'event' "
                                     "row 4: 'cart' is not a level of view<purchase")


def test_evaluate_prints_graded_metrics_for_a_test_file_with_levels(tmp_path, capsys):
    sim = simulate(150, 60, 2500, seed=4)
    frame = sim.train.to_frame().drop(columns=["rating", "timestamp"])
    frame.to_csv(tmp_path / "events.csv", index=False)
    assert main(["data", "prepare", "--input", str(tmp_path / "events.csv"), "--levels",
                 "click<cart<purchase", "--out", str(tmp_path / "p")]) == 0
    assert main(["train", "--model", "pop", "--train", str(tmp_path / "p" / "train.parquet"),
                 "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--test",
                 str(tmp_path / "p" / "test.parquet"), "--k", "5",
                 "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "purchase_ndcg@5" in out and "graded_ndcg@5" in out
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["click_ndcg@5"] == pytest.approx(metrics["ndcg@5"])  # level >= 1: all items
    assert 0 < metrics["graded_ndcg@5"] <= 1
