"""Typed, range-checked model parameters: one path for --param strings, YAML and Python."""

from typing import Literal

import numpy as np
import pytest

from pipelines.cli import main
from recsys import create_model
from recsys.errors import RecsysError
from recsys.models.params import Fraction, NonNegative, Positive, coerce_params


class Example:
    name = "example"

    def __init__(self, hidden: tuple[int, ...] = (128, 64), beta: float | None = None,
                 kind: Literal["a", "b"] = "a", flag: bool = True, units: Positive[int] = 3,
                 frac: Fraction = 0.1, decay: NonNegative[float] = 0.0, label: str = "x",
                 free=None) -> None:
        pass


@pytest.mark.parametrize("raw, typed", [
    ({"hidden": "128,64,32"}, {"hidden": (128, 64, 32)}),
    ({"hidden": [8]}, {"hidden": (8,)}),
    ({"beta": "none"}, {"beta": None}),
    ({"beta": "NULL"}, {"beta": None}),
    ({"beta": "0.5"}, {"beta": 0.5}),
    ({"beta": 2}, {"beta": 2.0}),
    ({"kind": "b"}, {"kind": "b"}),
    ({"flag": "false"}, {"flag": False}),
    ({"flag": "yes"}, {"flag": True}),
    ({"units": "7"}, {"units": 7}),
    ({"units": 7.0}, {"units": 7}),
    ({"frac": "0"}, {"frac": 0.0}),
    ({"label": "none"}, {"label": "none"}),
    ({"free": "anything"}, {"free": "anything"}),
])
def test_values_are_typed_from_annotations(raw, typed):
    out = coerce_params(Example, raw)
    assert out == typed and all(type(out[k]) is type(typed[k]) for k in typed)


@pytest.mark.parametrize("raw, message", [
    ({"units": "0"}, "parameter units='0': input should be greater than 0"),
    ({"units": "2.5"}, "parameter units='2.5': input should be a valid integer"),
    ({"units": "many"}, "parameter units='many': input should be a valid integer"),
    ({"frac": 1.0}, "parameter frac=1.0: input should be less than 1"),
    ({"decay": "-1e-3"}, "parameter decay='-1e-3': input should be greater than or equal to 0"),
    ({"decay": "nan"}, "parameter decay='nan': input should be a finite number"),
    ({"decay": float("inf")}, "parameter decay=inf: input should be a finite number"),
    ({"kind": "c"}, "parameter kind='c': input should be 'a' or 'b'"),
    ({"flag": "maybe"}, "parameter flag='maybe': input should be a valid boolean"),
    ({"hidden": "128,x"}, "parameter hidden='128,x': input should be a valid integer"),
    ({"colour": 1}, "model 'example' has no parameter(s) colour; parameters: beta, decay"),
])
def test_wrong_types_and_ranges_are_one_error_naming_the_parameter(raw, message):
    with pytest.raises(RecsysError, match=message.replace("(", r"\(").replace(")", r"\)")):
        coerce_params(Example, raw)


@pytest.mark.parametrize("name, param, value", [
    ("mf", "factors", 0), ("mf", "lr", float("nan")), ("mf", "lr", -0.1), ("mf", "reg", -1),
    ("mf", "epochs", 0), ("mf", "valid_frac", 1.5), ("mf", "device", "gpu0"),
    ("mf", "valid_metric", "ndcg"), ("relmf", "clip", 2.0),
    ("als", "factors", 0), ("als", "alpha", 0), ("als", "iterations", -3),
    ("bpr", "learning_rate", float("nan")), ("bpr", "regularization", -0.5),
    ("two_tower", "hidden", ()), ("two_tower", "hidden", ""),
])
def test_every_model_refuses_out_of_range_values_before_fitting(name, param, value):
    with pytest.raises(RecsysError, match=f"model '{name}': parameter {param}="):
        create_model(name, **{param: value})


def test_models_built_directly_are_checked_when_fit_starts(small_data):
    from recsys.models.mf import MF

    with pytest.raises(RecsysError, match="parameter factors=0"):
        MF(factors=0).fit(small_data)


@pytest.mark.parametrize("name, params, culprit", [
    ("als", {"alpha": 1e20, "iterations": 2}, "alpha"),
    ("bpr", {"learning_rate": 10.0, "iterations": 5}, "learning_rate"),
])
def test_implicit_divergence_names_the_parameter(name, params, culprit, small_data):
    model = create_model(name, factors=8, progress=False, **params)
    with pytest.raises(RecsysError, match=f"{name}: training diverged .*; lower {culprit}"):
        model.fit(small_data)


def test_cli_refuses_a_bad_param_before_reading_data(tmp_path, capsys):
    missing = tmp_path / "no_such_file.csv"  # never read: the parameter is refused first
    code = main(["train", "--model", "mf", "--train", str(missing), "--param", "factors=0",
                 "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "recsys: error: model 'mf': parameter factors='0': input should be greater than 0"]
    assert not (tmp_path / "m").exists()


def test_cli_types_tuples_and_optionals(small_log, tmp_path):
    path = tmp_path / "train.csv"
    small_log.to_csv(path, index=False)
    out = tmp_path / "m"
    assert main(["train", "--model", "mf", "--train", str(path), "--param", "epochs=2",
                 "--param", "beta=none", "--param", "factors=4", "--param", "progress=false",
                 "--param", "device=cpu", "--out", str(out)]) == 0
    from recsys import load_model

    model = load_model(out)
    assert model.beta is None and model.factors == 4 and model.epochs == 2
    assert np.isfinite(model.score(np.array([0])).numpy()).all()



def test_models_lists_types_ranges_and_preset_values(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    mf = out[out.index("\nmf:"):out.index("\npop:")]
    assert "\n  factors: int > 0 = 64\n" in mf and "\n  loss: bpr|ubpr|bce|wmf|relmf = bpr\n" in mf
    assert "\n  valid_frac: float >= 0 < 1 = 0.1\n" in mf and "\n  beta: float >= 0 | None = None" in mf
    relmf = out[out.index("\nrelmf:"):]
    assert "\n  loss: bpr|ubpr|bce|wmf|relmf = relmf (preset)\n" in relmf
    assert "pop: (no parameters)" in out
    assert "\n  hidden: int > 0,... (at least 1) = (128, 64, 32)\n" in out  # two_tower
