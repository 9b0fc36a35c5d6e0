"""Export a recsys model as an MLflow pyfunc model with a signature, and register it."""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import numpy
import pandas as pd
import safetensors
import scipy
import torch
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

import recsys
from pipelines.tracking import no_integer_schema_hint
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender, load_model, load_seen

WRAPPER = Path(__file__).with_name("pyfunc_model.py")
# the library travels inside the exported model (code_paths), its dependencies as requirements
REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
                f"scipy=={scipy.__version__}", f"pandas=={pd.__version__}",
                f"safetensors=={safetensors.__version__}", f"mlflow=={mlflow.__version__}",
                f"implicit=={metadata.version('implicit')}",
                f"threadpoolctl=={metadata.version('threadpoolctl')}"]


# the input column type of each user feature kind (categorical values as text, as in a file)
FEATURE_TYPES = {"categorical": "string", "multi": "string", "numeric": "double",
                 "dense": Array("double"), "text": "string"}


def signature(model: BaseRecommender) -> ModelSignature:
    """Inputs user_id, an optional history and, for a model that encodes new users from
    features, one optional column per user feature."""
    user_type = "long" if model.user_map_.is_integer else "string"
    item_type = "long" if model.item_map_.is_integer else "string"
    features = []
    if "features" in getattr(model, "new_user_inputs", ()):
        table = getattr(model, "features_", {}).get("user_features")
        clash = {"user_id", "history"} & set(table.columns if table is not None else ())
        if clash:
            raise RecsysError(f"user feature {clash.pop()!r} has the name of an input column of "
                              "the exported model; rename it in the features file")
        features = [ColSpec(FEATURE_TYPES[c.kind], name, required=False)
                    for name, c in (table.columns.items() if table is not None else ())]
    return ModelSignature(
        inputs=Schema([ColSpec(user_type, "user_id"),
                       ColSpec(Array(item_type), "history", required=False), *features]),
        outputs=Schema([ColSpec(user_type, "user_id"), ColSpec(item_type, "item_id"),
                        ColSpec("float", "score"), ColSpec("long", "rank"),
                        ColSpec("boolean", "fallback"), ColSpec("boolean", "folded_in")]),
        params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("filter_seen", "boolean", True),
                            ParamSpec("output", "string", "rows"),
                            *([ParamSpec("grade", "string", "")] if hasattr(model, "at_level")
                              else [])]),
    )


def log_pyfunc(model: BaseRecommender, seen: Interactions, name: str = "pyfunc"):
    """Log `model` with its id maps and the seen-item matrix in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model", seen=seen)
        example = pd.DataFrame({"user_id": model.user_map_.ids[:2]})
        with no_integer_schema_hint():
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
