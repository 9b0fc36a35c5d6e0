"""MLflow conventions: where runs go, metric names MLflow accepts, dataset fingerprints."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Experiment

from recsys.data.interactions import Interactions

# where runs go is decided beside open_model (recsys.store), which serving uses too
from recsys.store import DEFAULT_TRACKING_URI, tracking_uri  # noqa: F401

OWNER_TAG = "recsys.owner"  # host:pid of the process that runs a run
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the MLflow UI to pick the first tab
EXPERIMENT_KIND = "custom_model_development"


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside an SQLite store (`<db>.lock`) while it is opened.

    MLflow creates and migrates a new SQLite store's tables on first use; two processes doing
    it at once fail ("table ... already exists"), so the first use is serialised. Other stores
    (a tracking server, a database server) need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///").split("?")[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def use_experiment(name: str) -> Experiment:
    """Point MLflow at `tracking_uri()` and make `name` the active experiment, created if new.

    The experiment is tagged as model training (`mlflow.experimentKind`), so MLflow versions
    that read the tag open it on its runs rather than on the GenAI overview.
    """
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        experiment = mlflow.set_experiment(name)
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                              EXPERIMENT_KIND)
    return experiment


def runs_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The UI address of an experiment's runs table. MLflow 3's UI opens an experiment in
    its GenAI view unless the address (or the user's last choice) asks for model training."""
    return f"{host}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


@contextmanager
def no_integer_schema_hint() -> Iterator[None]:
    """Silence MLflow's hint that inferred integer columns cannot hold missing values: our
    model signatures are declared and our dataset columns (ids, counts) are never missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        yield


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of an experiment whose process on this host has ended (a
    comparison killed midway), so the next one starts from a clean store. Finished runs are
    left as they are; runs of live processes and of other hosts are not touched."""
    client = MlflowClient()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=1000)
    closed = []
    for run in running:
        host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "error", f"process {pid} ended before the run finished")
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: 'ndcg@20' -> 'ndcg_at_20'."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name.replace("@", "_at_"))


def fingerprint(data: Interactions, rule: str) -> str:
    """sha256 of the training matrix (pattern and weights) and the rule that produced it."""
    h = hashlib.sha256()
    m = data.matrix
    for array in (m.indptr, m.indices, m.data):
        h.update(array.tobytes())
    h.update(rule.encode())
    return h.hexdigest()


class EpochLogger:
    """A training callback that logs each epoch's logs with `step`: the loss and each named
    loss part, seconds, and the validation score (`epoch_valid_<metric>`); a refit's keys
    carry its prefix (`epoch_refit_loss`), so it is plotted apart from the selection run."""

    def __init__(self, valid_metric: str = "valid") -> None:
        self.valid_metric = valid_metric
        self.history: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.history.append({"epoch": epoch, **logs})
        metrics = {metric_key(f"epoch_{key}_{self.valid_metric}" if key.endswith("valid")
                              else f"epoch_{key}"): value for key, value in logs.items()}
        mlflow.log_metrics(metrics, step=epoch)
