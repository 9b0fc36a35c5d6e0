"""Export a recsys model as an MLflow pyfunc model with a signature, and register it."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
import numpy
import pandas as pd
import safetensors
import scipy
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import recsys
from pipelines.tracking import tracking_uri
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender, load_model, load_seen

WRAPPER = Path(__file__).with_name("pyfunc_model.py")
# the library travels inside the exported model (code_paths), its dependencies as requirements
REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
                f"scipy=={scipy.__version__}", f"pandas=={pd.__version__}",
                f"safetensors=={safetensors.__version__}", f"mlflow=={mlflow.__version__}"]


def signature(model: BaseRecommender) -> ModelSignature:
    user_type = "long" if model.user_map_.is_integer else "string"
    item_type = "long" if model.item_map_.is_integer else "string"
    return ModelSignature(
        inputs=Schema([ColSpec(user_type, "user_id")]),
        outputs=Schema([ColSpec(user_type, "user_id"), ColSpec(item_type, "item_id"),
                        ColSpec("float", "score"), ColSpec("long", "rank"),
                        ColSpec("boolean", "fallback")]),
        params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("filter_seen", "boolean", True),
                            ParamSpec("output", "string", "rows")]),
    )


def log_pyfunc(model: BaseRecommender, seen: Interactions, name: str = "pyfunc"):
    """Log `model` with its id maps and the seen-item matrix in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model", seen=seen)
        example = pd.DataFrame({"user_id": model.user_map_.ids[:2]})
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(WRAPPER), artifacts={"model": str(Path(tmp) / "model")},
            signature=signature(model), input_example=example,
            code_paths=[str(Path(recsys.__file__).parent)], pip_requirements=REQUIREMENTS)


def log_model_dir(model: BaseRecommender, seen: Interactions) -> None:
    """Log the model folder and the seen-item matrix under `model/` of the active run, so the
    run can be exported later (`recsys export --run`)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model", seen=seen)
        mlflow.log_artifacts(str(Path(tmp) / "model"), artifact_path="model")


def export_run(run_id: str, name: str, alias: str | None = "champion") -> int:
    """Log a pyfunc model in run `run_id` from its `model/` folder, and register it."""
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model"))
    model = load_model(local)
    seen = load_seen(local, model)
    if seen is None:
        raise RecsysError(f"run {run_id}: its model/ folder has no seen-item matrix")
    with mlflow.start_run(run_id=run_id):
        info = log_pyfunc(model, seen)
    return register(info.model_uri, name, alias)


def register(model_uri: str, name: str, alias: str | None = "champion") -> int:
    """Register `model_uri` under `name`; move `alias` to the new version. Returns the version."""
    version = mlflow.register_model(model_uri, name)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def is_registry_uri(ref: str) -> bool:
    return ref.startswith(("models:/", "runs:/"))


def download_model(uri: str) -> tuple[Path, str]:
    """A local copy of the recsys model folder behind models:/NAME@ALIAS, models:/NAME/VERSION
    or runs:/ID/model, and a version label (NAME/VERSION, or the run id)."""
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
    except (MlflowException, ValueError, TypeError) as exc:
        raise RecsysError(f"{uri}: cannot be loaded from {tracking_uri()}: "
                          f"{str(exc).splitlines()[0]}") from exc


def open_model(ref: str) -> tuple[BaseRecommender, Interactions | None, str]:
    """Model, stored seen items (None if absent) and a version label of a folder or registry
    URI: NAME/VERSION, a run id, or for a folder a digest of its weights."""
    if is_registry_uri(ref):
        path, label = download_model(ref)
    else:
        path = Path(ref)
        weights = path / "weights.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.exists() else "?"
        label = f"sha256:{digest}"
    model = load_model(path)
    return model, load_seen(path, model), label
