"""MLflow conventions: where runs go, metric names MLflow accepts, dataset fingerprints."""

from __future__ import annotations

import hashlib
import os
import re
import socket

import mlflow
from mlflow import MlflowClient

from recsys.data.interactions import Interactions

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
OWNER_TAG = "recsys.owner"  # host:pid of the process that runs a run


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (e.g. a server), else an SQLite store in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


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
