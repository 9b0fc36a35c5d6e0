import os
import socket

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# no usage telemetry from MLflow: tests (and the servers they start) stay off the network
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# tests work on tiny tensors: one intra-op thread avoids the cost of waking a thread pool on
# every small op (and oversubscription when several test runs share the cores)
torch.set_num_threads(1)

from recsys.data import Interactions  # noqa: E402
from recsys.data.synthetic import synthetic_log  # noqa: E402


@pytest.fixture(scope="session")
def small_log() -> pd.DataFrame:
    """A structured synthetic log: 400 users, 150 items, ~8000 pairs, string ids."""
    return synthetic_log(400, 150, 8000, affinity=3.0, string_ids=True, seed=3)


@pytest.fixture(scope="session")
def small_data(small_log) -> Interactions:
    return Interactions.from_frame(small_log, time_col="timestamp")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    """A fresh MLflow SQLite tracking store, the working directory and MLFLOW_TRACKING_URI."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.end_run()
