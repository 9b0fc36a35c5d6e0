"""MLflow pipelines against real tracking stores: SQLite, and an `mlflow server` on 127.0.0.1."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.config import load_config
from recsys.data.simulate import simulate
from recsys.errors import RecsysError
from recsys.models.base import load_model, load_seen

TINY = """
experiment: tiny
data: {kind: simulate, n_users: 300, n_items: 200, n_interactions: 4000, seed: 0}
models:
  - name: pop
  - name: mf
    params: {epochs: 4, factors: 8}
    grid: {device: [cpu, 'cuda:7']}
k: [5, 20]
register_as: tiny-model
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("text, needle", [
    ("models:\n  - name: mf\n    parms: {}\n", "models.0.parms: unknown key"),
    ("models:\n  - name: mff\n", "unknown model 'mff'"),
    ("models:\n  - name: mf\n    grid: {lrr: [1]}\n", "no parameter(s) lrr"),
    ("models:\n  - name: mf\n    grid: {loss: [bpr, nonsense]}\n",
     "models.0: model 'mf': parameter loss='nonsense': input should be 'bpr'"),
    ("models:\n  - name: mf\n    params: {factors: 0}\n",
     "models.0: model 'mf': parameter factors=0: input should be greater than 0"),
    ("models:\n  - name: mf\n    params: {lr: .nan}\n", "parameter lr=nan: input should be a finite"),
    ("models:\n  - name: als\n    params: {iterations: ten}\n", "parameter iterations='ten'"),
    ("models:\n  - name: pop\nselect: ndcg@7\n", "select 'ndcg@7'"),
    ("modells: []\n", "modells: unknown key"),
    ("models: []\n", "models: List should have at least 1 item"),
    ("models:\n  - name: mf\n    grid: {factors: []}\n", "models.0: grid.factors: give at least one value"),
    ("models:\n  - name: pop\n    tune: {trials: 2}\n", "models.0: tune: model 'pop' has nothing to search"),
    ("models:\n  - name: als\n    tune: {trials: null}\n",
     "models.0.tune: give trials, timeout or both: a search needs a budget"),
    ("models:\n  - name: als\n    tune: {timeout: .nan}\n",
     "models.0.tune.timeout: Input should be a finite number"),
    ("models:\n  - name: als\n    tune: {metric: ndcg20}\n", "models.0.tune: metric 'ndcg20' is not"),
    ("models:\n  - name: als\n    grid: {factors: [8, 16]}\n    tune: {space: {factors: [4, 8]}}\n",
     "models.0: tune.space: factors is also fixed by params or grid; give it in one place"),
    ("models:\n  - name: als\n    tune: {space: {factors: [4, x]}}\n",
     "models.0: tune.space: factors: model 'als': parameter factors='x': input should be"),
    ("models:\n  - name: pop\nk: [10, 99999999999]\n", "k: k must be positive integers, at most 2147483647"),
    ("models:\n  - name: mf\n    tune: {space: {eta: [0.0, 0.5]}}\n",
     "models.0: tune.space: eta is searched only where loss is one of relmf, ubpr, and loss is"),
    ("models: [\n", "not valid YAML"),
    ("models:\n  - name: pop\nsplit: {seed: -1}\n", "split.seed: Input should be greater than or equal to 0"),
    ("models:\n  - name: pop\nsplit: {how: leave-last, test_frac: 1}\n",
     "split.test_frac: Input should be less"),
    ("models:\n  - name: pop\ndata: {kind: file, path: x.csv, rating_col: r, min_rating: .nan}\n",
     "data.file.min_rating: Input should be a finite number"),
])
def test_config_errors_name_the_key(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(RecsysError, match=re.escape(needle)):
        load_config(path)


def check_comparison(client: MlflowClient, capsys_out: str, capsys_err: str = "") -> None:
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" in capsys_out
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    by_name = {r.data.tags["mlflow.runName"]: r for r in children}
    failed = by_name["mf device=cuda:7"]  # valid as a parameter; no such device at fit time
    assert failed.info.status == "FAILED" and "cuda:7" in failed.data.tags["error"]
    mf = by_name["mf device=cpu"]
    assert mf.info.status == "FINISHED"
    assert {"ndcg_at_20", "recall_at_5", "unbiased_dcg_at_5"} <= set(mf.data.metrics)
    # simulated clicks have levels (click < cart < purchase): graded metrics are logged too
    assert {"purchase_ndcg_at_20", "graded_ndcg_at_20"} <= set(mf.data.metrics)
    assert mf.data.tags["dataset_fingerprint"] == parents[0].data.tags["dataset_fingerprint"]
    sim = simulate(300, 200, 4000, seed=0)
    for run in [*parents, *children]:  # every run names its data: the runs table's Dataset column
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "testing"}
        train, test = inputs["training"], inputs["testing"]
        assert (train.name, test.name) == ("simulated training", "simulated testing")
        assert train.source_type == "code" and '"mlflow.source.name": "recsys.data.simulate"' in train.source
        assert train.digest == mf.data.tags["dataset_fingerprint"][:16]
        assert json.loads(train.profile)["num_rows"] == sim.train.nnz
        assert json.loads(test.profile)["num_rows"] == sim.test.nnz
    # one progress bar over the runs: the current run's name, then finished/failed counts
    assert "compare: mf device=cuda:7" in capsys_err and "3/3" in capsys_err
    assert "2 finished, 1 failed" in capsys_err
    history = client.get_metric_history(mf.info.run_id, "epoch_loss")
    assert [m.step for m in history][:4] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/metrics.csv", "report/metrics.md", "report/metric_by_model.png"} <= artifacts
    winner = parents[0].data.tags["winner"]
    version = client.get_model_version_by_alias("tiny-model", "champion")
    assert version.run_id == by_name[winner].info.run_id
    assert "models:/tiny-model@champion" in capsys_out


def test_compare_registers_the_winner_and_pyfunc_matches_the_model(sqlite_store, tiny_config, capsys,
                                                                  recwarn):
    assert main(["compare", "--config", str(tiny_config)]) == 0
    # our schemas are declared: MLflow's hint about inferred integer columns is not shown
    assert not [w for w in recwarn if "Inferred schema contains integer" in str(w.message)]
    captured = capsys.readouterr()
    out = captured.out
    client = MlflowClient(sqlite_store)
    check_comparison(client, out, captured.err)
    version = client.get_model_version_by_alias("tiny-model", "champion")
    local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="model")
    model = load_model(local)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny-model@champion")
    users = model.user_map_.ids[:4]
    got = pyfunc.predict(pd.DataFrame({"user_id": [*users, -1]}), params={"k": 7})
    assert got.loc[got.user_id == -1, "fallback"].all() and len(got[got.user_id == -1]) == 7
    seen = load_seen(local, model)
    items, _ = model.recommend(np.arange(4), 7, exclude=seen)
    for row, user in enumerate(users):
        mine = got[got.user_id == user].sort_values("rank")["item_id"].tolist()
        assert mine == model.item_map_.to_ids(items[row]).tolist()
    unfiltered = pyfunc.predict(pd.DataFrame({"user_id": users[:1]}), params={"k": 3, "filter_seen": False})
    assert len(unfiltered) == 3
    lists = pyfunc.predict(pd.DataFrame({"user_id": [-1, *users]}), params={"k": 7, "output": "lists"})
    assert lists.user_id.tolist() == [-1, *users] and lists.fallback.tolist() == [True] + [False] * 4
    for user, item_ids, scores in zip(lists.user_id, lists.item_ids, lists.scores, strict=True):
        mine = got[got.user_id == user].sort_values("rank")
        assert item_ids == mine.item_id.tolist() and np.allclose(scores, mine.score)


def test_compare_against_a_real_mlflow_server(tmp_path, tiny_config, monkeypatch, capsys, free_port):
    port = free_port
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert main(["compare", "--config", str(tiny_config)]) == 0
        captured = capsys.readouterr()
        check_comparison(MlflowClient(uri), captured.out, captured.err)
    finally:
        mlflow.end_run()
        server.terminate()
        server.wait(timeout=30)


def test_export_a_model_folder_and_batch_recommend_from_the_registry(sqlite_store, tmp_path, capsys):
    from recsys.data.simulate import simulate

    sim = simulate(200, 100, 2500, seed=1)
    sim.train.to_frame().to_parquet(tmp_path / "train.parquet")
    assert main(["train", "--model", "pop", "--train", str(tmp_path / "train.parquet"),
                 "--out", str(tmp_path / "pop")]) == 0
    assert main(["export", "--model", str(tmp_path / "pop"), "--train", str(tmp_path / "train.parquet"),
                 "--name", "popular", "--alias", "champion"]) == 0
    assert "models:/popular@champion" in capsys.readouterr().out
    assert main(["recommend", "--model", "models:/popular@champion", "--train",
                 str(tmp_path / "train.parquet"), "--k", "4", "--out", str(tmp_path / "r.parquet")]) == 0
    recs = pd.read_parquet(tmp_path / "r.parquet")
    assert len(recs) == 4 * sim.train.n_users
    assert main(["recommend", "--model", "models:/nothing@champion", "--train",
                 str(tmp_path / "train.parquet"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "models:/nothing@champion: cannot be loaded" in capsys.readouterr().err


def test_a_comparison_killed_midway_leaves_a_clean_store(sqlite_store, tmp_path):
    """SIGKILL during the second run: the first run stays FINISHED with its metrics; the next
    comparison marks the orphaned runs KILLED and runs afresh."""
    slow = tmp_path / "slow.yaml"
    slow.write_text(TINY.replace("experiment: tiny", "experiment: crash")
                    .replace("register_as: tiny-model", "")
                    .replace("params: {epochs: 4, factors: 8}", "params: {epochs: 100000, patience: 100000}")
                    .replace("grid: {device: [cpu, 'cuda:7']}", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "compare", "--config", str(slow)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline = MlflowClient(sqlite_store), time.time() + 120
    try:
        while True:
            assert proc.poll() is None and time.time() < deadline, "comparison ended before the kill"
            exp = client.get_experiment_by_name("crash")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            status = {r.info.run_name: r.info.status for r in runs}
            if status.get("pop") == "FINISHED" and status.get("mf") == "RUNNING":
                break
            time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait(30)
    before = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}

    quick = tmp_path / "quick.yaml"
    quick.write_text("experiment: crash\ndata: {kind: simulate, n_users: 300, n_items: 200, "
                     "n_interactions: 4000, seed: 0}\nmodels:\n  - name: pop\nk: [5, 20]\n")
    assert main(["compare", "--config", str(quick)]) == 0
    after = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    for run_id, old in before.items():
        new = after[run_id]
        if old.info.run_name == "pop":
            assert new.info.status == "FINISHED" and new.data.metrics == old.data.metrics
        else:  # the killed mf run and its parent
            assert new.info.status == "KILLED" and "ended before the run finished" in new.data.tags["error"]
    fresh = [r for r in after.values() if r.info.run_id not in before]
    assert len(fresh) == 2 and all(r.info.status == "FINISHED" for r in fresh)


def test_compare_fails_when_every_run_fails(sqlite_store, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: allfail\ndata: {kind: simulate, n_users: 300, n_items: 200, "
                    "n_interactions: 4000, seed: 0}\nmodels:\n  - name: mf\n"
                    "    params: {epochs: 2, device: 'cuda:7'}\nk: [5, 20]\n")
    assert main(["compare", "--config", str(path)]) == 2
    assert "recsys: error: all 1 runs failed; mf: RecsysError: device 'cuda:7'" in capsys.readouterr().err


def test_concurrent_comparisons_on_a_new_sqlite_store(tmp_path):
    """Three comparisons started at once on a store that does not exist yet all succeed (the
    first use of the store, which creates its tables, is serialised)."""
    config = tmp_path / "pop.yaml"
    config.write_text("experiment: together\ndata: {kind: simulate, n_users: 300, n_items: 200, "
                      "n_interactions: 4000, seed: 0}\nmodels:\n  - name: pop\nk: [5]\n"
                      "select: ndcg@5\n")
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "compare", "--config", str(config)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("together")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["compare together"] * 3 + ["pop"] * 3
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_config_that_is_a_folder_or_not_text_is_one_error(tmp_path):
    with pytest.raises(RecsysError) as err:
        load_config(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, not a config file"
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00models")
    with pytest.raises(RecsysError) as err:
        load_config(binary)
    assert str(err.value) == f"{binary}: not a text file (a config is YAML)"
