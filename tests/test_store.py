"""recsys.store.open_model on folders and MLflow URIs (a real SQLite store), and the layering
rule it makes possible: serving imports nothing from pipelines."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys import create_model
from recsys.errors import RecsysError
from recsys.models.base import save_seen
from recsys.store import open_model, redact

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path, small_data):
    model = create_model("als", factors=4, iterations=2, progress=False).fit(small_data)
    model.save(tmp_path / "als")
    save_seen(tmp_path / "als", small_data)
    return tmp_path / "als"


def test_open_a_folder_and_every_registry_uri(sqlite_store, folder):
    from mlflow import MlflowClient

    from pipelines.cli import main

    model, seen, label = open_model(str(folder))
    assert label.startswith("sha256:") and seen.nnz > 0
    assert main(["export", "--model", str(folder), "--name", "shop", "--alias", "champion"]) == 0
    run_id = MlflowClient().get_model_version("shop", "1").run_id
    for uri, expected in [("models:/shop@champion", "shop/1"), ("models:/shop/1", "shop/1"),
                          (f"runs:/{run_id}/model", run_id)]:
        other, other_seen, other_label = open_model(uri)
        assert other_label == expected
        assert np.array_equal(other.item_factors().numpy(), model.item_factors().numpy())
        assert other.user_map_ == model.user_map_ and (other_seen.matrix != seen.matrix).nnz == 0
    for bad in ("models:/shop@nobody", "models:/nothing/1", "runs:/0123456789abcdef/model"):
        with pytest.raises(RecsysError, match="cannot be loaded from sqlite:///"):
            open_model(bad)
    with pytest.raises(RecsysError, match="missing: no such model folder"):
        open_model(str(folder / "missing"))


def test_redact_hides_user_and_password_of_any_uri():
    text = "http://alice:pw@host:5000/x failed; postgresql://bob@db/m and https://h/p stay"
    assert redact(text) == "http://***@host:5000/x failed; postgresql://***@db/m and https://h/p stay"


def test_serving_imports_nothing_from_pipelines(folder):
    for path in (ROOT / "serving").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "pipelines" for n in names), f"{path.name} imports {names}"
    # and at run time: build the app and load a model, then look at what got imported
    code = (f"import sys; from serving import Settings, create_app; from serving.loader import load_engine; "
            f"s = Settings(model={str(folder)!r}); create_app(s, load_engine(s)); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipelines'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
