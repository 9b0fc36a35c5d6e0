import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from pipelines.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_log):
    d = tmp_path_factory.mktemp("cli")
    log = small_log.copy()
    log["rating"] = 1 + (log.index % 5)  # explicit ratings, used with --min-rating
    log.to_csv(d / "events.csv", index=False)
    return d


def pair_set(frame: pd.DataFrame) -> set:
    return set(zip(frame.user_id, frame.item_id, strict=True))


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def prepared(workdir):
    assert main(["data", "prepare", "--input", str(workdir / "events.csv"), "--out",
                 str(workdir / "prep"), "--split", "random", "--seed", "1"]) == 0
    return workdir / "prep"


def test_prepare_writes_split_files_with_external_ids(prepared):
    train = pd.read_parquet(prepared / "train.parquet")
    test = pd.read_parquet(prepared / "test.parquet")
    assert {"user_id", "item_id", "rating", "timestamp"} <= set(train.columns)
    assert train["user_id"].str.startswith("u").all() and test["item_id"].str.startswith("i").all()
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["train_pairs"] == len(train) and meta["test_pairs"] == len(test)
    assert not pair_set(train) & pair_set(test)


def test_min_rating_threshold_keeps_only_positives(workdir, capsys):
    code, out, _ = run(["data", "prepare", "--input", workdir / "events.csv", "--min-rating", 4,
                        "--out", workdir / "pos"], capsys)
    assert code == 0
    train = pd.read_parquet(workdir / "pos" / "train.parquet")
    test = pd.read_parquet(workdir / "pos" / "test.parquet")
    events = pd.read_csv(workdir / "events.csv")
    assert len(train) + len(test) <= (events.rating >= 4).sum() and (train.rating == 1).all()


@pytest.mark.parametrize("model", ["pop", "mf", "relmf", "sgl"])
def test_train_evaluate_recommend_end_to_end(model, prepared, tmp_path, capsys):
    params = ["--param", "epochs=5", "--param", "factors=8"] if model != "pop" else []
    code, out, _ = run(["train", "--model", model, "--train", prepared / "train.parquet",
                        "--out", tmp_path / "m", *params], capsys)
    assert code == 0 and "trained" in out
    code, out, _ = run(["evaluate", "--model", tmp_path / "m", "--train", prepared / "train.parquet",
                        "--test", prepared / "test.parquet", "--k", "5,10",
                        "--json", tmp_path / "m.json"], capsys)
    assert code == 0 and "ndcg@10" in out
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert 0 < metrics["ndcg@10"] <= 1 and metrics["users"] > 0
    code, out, _ = run(["recommend", "--model", tmp_path / "m", "--train",
                        prepared / "train.parquet", "--k", 7, "--out", tmp_path / "r.parquet",
                        "--chunk-users", 50], capsys)
    assert code == 0
    recs = pd.read_parquet(tmp_path / "r.parquet")
    train = pd.read_parquet(prepared / "train.parquet")
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank", "fallback", "folded_in"]
    assert not recs.fallback.any() and not recs.folded_in.any()
    assert recs.groupby("user_id").size().max() == 7 and recs["rank"].min() == 1
    assert recs["user_id"].nunique() == train["user_id"].nunique()
    assert not pair_set(recs) & pair_set(train)
    ordered = recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)
    assert ordered.all()


def test_recommend_full_catalogue_and_user_file(prepared, tmp_path, capsys):
    assert run(["train", "--model", "pop", "--train", prepared / "train.parquet", "--out",
                tmp_path / "pop"], capsys)[0] == 0
    train = pd.read_parquet(prepared / "train.parquet")
    users = pd.DataFrame({"user_id": [train.user_id.iloc[0], "stranger"]})
    users.to_csv(tmp_path / "users.csv", index=False)
    n_items = train["item_id"].nunique()
    code, out, _ = run(["recommend", "--model", tmp_path / "pop", "--train",
                        prepared / "train.parquet", "--users", tmp_path / "users.csv", "--k",
                        n_items + 50, "--out", tmp_path / "all.parquet"], capsys)
    assert code == 0 and "1 users unknown to the model got the most popular items" in out
    recs = pd.read_parquet(tmp_path / "all.parquet")
    seen = (train.user_id == users.user_id[0]).sum()
    known, stranger = recs[recs.user_id == users.user_id[0]], recs[recs.user_id == "stranger"]
    assert len(known) == n_items - seen and not known.fallback.any()
    assert len(stranger) == n_items and stranger.fallback.all()  # nothing seen: every item


def test_bad_inputs_exit_nonzero_with_one_line(workdir, prepared, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    pd.DataFrame({"user": ["a"], "item_id": ["b"]}).to_csv(tmp_path / "nocol.csv", index=False)
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": ["5", "lots"]}).to_csv(
        tmp_path / "badrating.csv", index=False)
    pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}).to_csv(tmp_path / "nan.csv", index=False)
    pd.DataFrame({"user_id": ["nobody"], "item_id": ["i1"]}).to_csv(tmp_path / "strangers.csv", index=False)
    assert main(["train", "--model", "pop", "--train", str(prepared / "train.parquet"),
                 "--out", str(tmp_path / "pop")]) == 0
    capsys.readouterr()
    train = str(prepared / "train.parquet")
    cases = [
        (["data", "prepare", "--input", tmp_path / "empty.csv", "--out", tmp_path / "o"], "empty"),
        (["data", "prepare", "--input", tmp_path / "nocol.csv", "--out", tmp_path / "o"], "user_id"),
        (["data", "prepare", "--input", tmp_path / "badrating.csv", "--rating-col", "rating",
          "--out", tmp_path / "o"], "'lots'"),
        (["data", "prepare", "--input", tmp_path / "nan.csv", "--out", tmp_path / "o"], "row 2"),
        (["train", "--model", "nope", "--train", train, "--out", tmp_path / "o"], "unknown model"),
        (["train", "--model", "mf", "--train", train, "--param", "epochs=many", "--out",
          tmp_path / "o"], "epochs"),
        (["train", "--model", "mf", "--train", train, "--param", "colour=1", "--out",
          tmp_path / "o"], "colour"),
        (["train", "--model", "als", "--train", train, "--valid", train, "--out", tmp_path / "o"],
         "--valid: model 'als' does not select epochs on validation data"),
        (["train", "--model", "mf", "--train", train, "--item-features", train, "--out",
          tmp_path / "o"], "--item-features: model 'mf' does not use item features (it reads "
         "nothing but the interactions)"),
        (["evaluate", "--model", tmp_path / "pop", "--train", train, "--test",
          tmp_path / "strangers.csv"], "none of its users"),
        (["evaluate", "--model", tmp_path / "pop", "--train", tmp_path / "strangers.csv", "--test",
          train], "strangers.csv: none of its pairs has a user and an item known to the model"),
        (["recommend", "--model", tmp_path / "pop", "--train", tmp_path / "strangers.csv", "--out",
          tmp_path / "r.parquet"], "strangers.csv: none of its pairs has a user and an item known"),
        (["train", "--model", "pop", "--train", train, "--out", tmp_path / "pop" / "config.json"],
         "is an existing file; expected a folder path"),
        (["train", "--model", "pop", "--train", train, "--out", workdir],
         "exists and is not empty, and has no config.json: refusing to replace it"),
        (["evaluate", "--model", tmp_path / "pop", "--train", train, "--test", train, "--k", "0"],
         "k must be"),
        (["recommend", "--model", tmp_path / "nomodel", "--train", train, "--out",
          tmp_path / "r.parquet"], "nomodel: no such model folder"),
        (["train", "--model", "mf", "--train", train, "--valid", train, "--out", tmp_path / "o"],
         "train.parquet: every pair is also in "),
        (["train", "--model", "mf", "--train", train, "--param", "=8", "--out", tmp_path / "o"],
         "--param '=8': expected key=value"),
        (["train", "--model", "mf", "--train", train, "--param", "factors=8", "--param",
          "factors=16", "--out", tmp_path / "o"], "--param factors given twice ('8' and '16'); give it once"),
        # a model too large for the memory: one line, not the allocator's traceback
        (["train", "--model", "mf", "--train", train, "--param", "factors=100000000000", "--out",
          tmp_path / "o"], "out of memory ("),
        (["evaluate", "--model", tmp_path / "pop", "--train", train, "--test", train, "--k",
          "99999999999999999999"], "k must be at most 2147483647, got 99999999999999999999"),
    ]
    for argv, needle in cases:
        code, out, err = run(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2, argv
        assert lines[-1].startswith("recsys: error:") and needle in lines[-1], (argv, err)


def test_console_script_runs_outside_the_repo(tmp_path):
    exe = shutil.which("recsys") or str(__import__("pathlib").Path(sys.executable).parent / "recsys")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0 and "prepare" in done.stdout and "recommend" in done.stdout


def test_evaluate_drops_test_pairs_that_are_training_pairs(tmp_path, capsys):
    """The issue's example through the CLI: pop at k=2 gives recall@2 1.0 over one user."""
    pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 3], "item_id": [10, 11, 10, 12, 10, 11, 13]}).to_csv(
        tmp_path / "train.csv", index=False)
    pd.DataFrame({"user_id": [1, 2, 2], "item_id": [10, 10, 11]}).to_csv(tmp_path / "test.csv", index=False)
    assert run(["train", "--model", "pop", "--train", tmp_path / "train.csv", "--out", tmp_path / "pop"],
               capsys)[0] == 0
    code, out, _ = run(["evaluate", "--model", tmp_path / "pop", "--test", tmp_path / "test.csv",
                        "--k", "2", "--json", tmp_path / "m.json"], capsys)
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert code == 0 and metrics["recall@2"] == 1.0 and metrics["users"] == 1
    assert metrics["test_pairs_in_train"] == 2 and "2 test pairs are also training pairs" in out
