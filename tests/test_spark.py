"""Batch scoring on Spark local mode through mlflow.pyfunc.spark_udf (needs pyspark and Java)."""

import shutil
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main

pytest.importorskip("pyspark", reason="Spark batch scoring needs the [spark] extra")
if shutil.which("java") is None:
    pytest.skip("Spark local mode needs Java (no `java` on PATH)", allow_module_level=True)


@pytest.fixture
def spark(monkeypatch):
    from pipelines.spark_batch import spark_session

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    session = spark_session("recsys-test")
    yield session
    session.stop()


def test_spark_batch_matches_the_pyfunc_model(sqlite_store, spark, small_data, tmp_path, capsys):
    from recsys import create_model
    from recsys.models.base import save_seen

    model = create_model("als", factors=8, iterations=3).fit(small_data)
    model.save(tmp_path / "als")
    save_seen(tmp_path / "als", small_data)
    assert main(["export", "--model", str(tmp_path / "als"), "--name", "spark-model"]) == 0
    users = [*small_data.user_map.ids[:30].tolist(), "stranger"]
    pd.DataFrame({"user_id": users}).to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "recs"
    assert main(["recommend", "--model", "models:/spark-model@champion", "--spark",
                 "--users", str(tmp_path / "users.csv"), "--k", "4", "--out", str(out)]) == 0
    expected = mlflow.pyfunc.load_model("models:/spark-model@champion").predict(
        pd.DataFrame({"user_id": users}), params={"k": 4})
    assert f"{len(expected)} recommendations for 31 users -> {out}" in capsys.readouterr().out
    got = pd.read_parquet(out).sort_values(["user_id", "rank"], ignore_index=True)
    expected = expected.sort_values(["user_id", "rank"], ignore_index=True)
    for column in ("user_id", "item_id", "rank", "fallback"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert np.allclose(got.score, expected.score, atol=1e-6)
    assert got.loc[got.user_id == "stranger", "fallback"].all()


def test_spark_needs_a_registered_model(tmp_path, capsys):
    assert main(["recommend", "--model", str(tmp_path), "--spark", "--out", str(tmp_path / "x")]) == 2
    assert "--spark scores an exported pyfunc model" in capsys.readouterr().err


def test_spark_returns_exactly_the_rows_of_the_local_job(sqlite_store, spark, tmp_path, capsys):
    """For integer ids and for text ids that look like numbers ("7", "12"), with unknown users
    and a new user with a history: --spark writes the same rows as the job without it."""
    from recsys.data.synthetic import synthetic_log

    log = synthetic_log(50, 40, 400, seed=2)
    kinds = {"int": log, "text": log.assign(user_id=log.user_id.map(lambda u: f"u{u}" if u % 3 else str(u)),
                                            item_id=log.item_id.map(lambda i: f"i{i}" if i % 2 else str(i)))}
    for kind, frame in kinds.items():
        frame.to_csv(tmp_path / f"{kind}.csv", index=False)
        assert main(["train", "--model", "als", "--train", str(tmp_path / f"{kind}.csv"), "--param",
                     "factors=4", "--out", str(tmp_path / kind)]) == 0
        assert main(["export", "--model", str(tmp_path / kind), "--name", kind]) == 0
        numeric = [u for u in frame.user_id.unique() if str(u).isdigit()][:6]
        users = pd.DataFrame({"user_id": [*numeric, "404", "newcomer" if kind == "text" else 999]})
        users.to_csv(tmp_path / "users.csv", index=False)
        pd.DataFrame({"user_id": users.user_id.iloc[-1], "item_id": frame.item_id.iloc[:5]}).to_csv(
            tmp_path / "history.csv", index=False)
        common = ["--model", f"models:/{kind}@champion", "--users", str(tmp_path / "users.csv"),
                  "--history", str(tmp_path / "history.csv"), "--k", "5"]
        assert main(["recommend", *common, "--out", str(tmp_path / f"{kind}.parquet")]) == 0
        assert main(["recommend", *common, "--spark", "--out", str(tmp_path / f"{kind}-spark")]) == 0
        capsys.readouterr()
        local = pd.read_parquet(tmp_path / f"{kind}.parquet")
        remote = pd.read_parquet(tmp_path / f"{kind}-spark")
        order = ["user_id", "rank"]
        local, remote = (f.sort_values(order, ignore_index=True) for f in (local, remote))
        assert list(remote.columns) == list(local.columns)
        assert remote.drop(columns="score").equals(local.drop(columns="score")), kind
        assert np.allclose(remote.score, local.score, rtol=1e-6)
        assert local.folded_in.any() and local.fallback.any() and len(local.user_id.unique()) == len(users)
