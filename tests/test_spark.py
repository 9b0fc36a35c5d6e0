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
