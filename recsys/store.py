"""Open a saved model wherever it lives: a model folder, or an MLflow registry or run URI
(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH). MLflow is imported only for
URIs, so serving a folder needs nothing beyond the library."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender, load_model, load_seen

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (e.g. a server), else an SQLite store in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def redact(text: str) -> str:
    """`text` with the user:password part of any URI in it replaced by ***."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def is_registry_uri(ref: str) -> bool:
    return ref.startswith(("models:/", "runs:/"))


def download_model(uri: str) -> tuple[Path, str]:
    """A local copy of the recsys model folder behind models:/NAME@ALIAS, models:/NAME/VERSION
    or runs:/ID/model, and a version label (NAME/VERSION, or the run id)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())
    try:
        label = uri.removeprefix("runs:/").split("/")[0]
        if uri.startswith("models:/"):
            ref = uri.removeprefix("models:/")
            client = MlflowClient()
            if "@" in ref:
                version = client.get_model_version_by_alias(*ref.split("@", 1))
            else:
                version = client.get_model_version(*ref.split("/", 1))
            uri, label = f"runs:/{version.run_id}/model", f"{version.name}/{version.version}"
        return Path(mlflow.artifacts.download_artifacts(uri)), label
    except (MlflowException, ValueError, TypeError, OSError) as exc:
        raise RecsysError(redact(f"{uri}: cannot be loaded from {tracking_uri()}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                          ) from exc


def open_model(ref: str) -> tuple[BaseRecommender, Interactions | None, str]:
    """Model, stored seen items (None if absent) and a version label of a folder or registry
    URI: NAME/VERSION, a run id, or for a folder a digest of its weights."""
    if is_registry_uri(ref):
        path, label = download_model(ref)
    else:
        path = Path(ref)
        weights = path / "weights.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else "?"
        label = f"sha256:{digest}"
    model = load_model(path)
    return model, load_seen(path, model), label
