"""Search spaces, Optuna studies and `recsys tune` / `compare` with `tune:` on a real MLflow store."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.tune import _Pruning, tune, validation_scorer
from recsys import create_model, load_model
from recsys.data import random_split
from recsys.data.split import holdout
from recsys.errors import RecsysError
from recsys.models.space import Choice, Float, Int, applies, parse_space, search_space

MF_FAST = {"factors": 8, "epochs": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def train(small_data):
    return random_split(small_data, test_frac=0.2, seed=0).train


@pytest.fixture
def train_file(tmp_path, train):
    path = tmp_path / "train.csv"
    train.to_frame().to_csv(path, index=False)
    return path


# ---- spaces ------------------------------------------------------------------------------
def test_space_file_overrides_the_models_space_and_types_from_the_parameters():
    space, fixed = search_space("mf", {"factors": {"low": 4, "high": 64, "log": True},
                                       "lr": {"low": "1e-3", "high": 0.1},
                                       "eta": [0.0, 0.5], "patience": 3},
                                 fixed={"loss": "relmf"})
    assert space["factors"] == Int(4, 64, log=True)  # an integer parameter: an integer range
    assert space["lr"] == Float(1e-3, 0.1)
    assert space["eta"] == Choice((0.0, 0.5), when={"loss": ("relmf", "ubpr")})  # condition kept
    assert space["reg"] == create_model("mf").search_space["reg"]  # the rest: the model's own
    assert fixed == {"patience": 3} and "patience" not in space


@pytest.mark.parametrize("raw, needle", [
    ({"colour": [1, 2]}, "no parameter 'colour'"),
    ({"lr": {"low": 1, "high": 0.1}}, "lr: search range needs low < high"),
    ({"lr": {"low": 0, "high": 1, "log": True}}, "lr: a log-scale search range needs low > 0"),
    ({"lr": {"low": 1e-3}}, "lr: a range needs low and high"),
    ({"lr": {"low": 1e-3, "high": 1, "step": 2}}, "lr: unknown key.*step"),
    ({"factors": {"low": 1.5, "high": 8}}, "factors: an integer search range needs integer bounds"),
    ({"item_bias": {"low": 0, "high": 1}}, "item_bias: a true/false parameter takes a choice"),
    ({"item_bias": {"low": 0, "high": 1, "type": "int"}}, "item_bias: a true/false parameter"),
    ([1, 2], "expected a mapping"),
])
def test_bad_space_entries_name_the_parameter(raw, needle):
    with pytest.raises(RecsysError, match=needle):
        parse_space(raw, create_model("mf").param_defaults(), source="space.yaml")


@pytest.mark.parametrize("raw, message", [
    ({"factors": [8, "x"]}, "space.yaml: factors: model 'als': parameter factors='x': input "
     "should be a valid integer, unable to parse string as an integer"),
    ({"factors": {"low": 0, "high": 4}},
     "space.yaml: factors: model 'als': parameter factors=0: input should be greater than 0"),
    ({"factors": {"low": 4, "high": 8, "type": "float"}}, "space.yaml: factors: model 'als' "
     "takes whole numbers for factors; give a range of integers (no type: float)"),
    ({"factors": -3}, "space.yaml: model 'als': parameter factors=-3: input should be greater than 0"),
])
def test_every_value_a_space_file_can_give_is_checked_before_any_trial(raw, message):
    with pytest.raises(RecsysError) as err:
        search_space("als", raw, source="space.yaml")
    assert str(err.value) == message


def test_choices_of_a_tuple_parameter_are_stored_as_text_the_parameter_reads():
    space, _ = search_space("two_tower", {"hidden": [[16, 8], [32]]})
    assert space["hidden"] == Choice(("16,8", "32"))
    assert create_model("two_tower", hidden=space["hidden"].values[0]).hidden == (16, 8)


def test_a_parameter_fixed_and_searched_at_once_is_an_error():
    for raw in ({"factors": [4, 8]}, {"factors": 8}):
        with pytest.raises(RecsysError) as err:
            search_space("als", raw, source="space.yaml", fixed={"factors": 16})
        assert str(err.value) == "space.yaml: factors is also fixed by --param; give it in one place"
    # fixing a parameter of the model's own space (no file names it) leaves the rest searched
    space, _ = search_space("als", {"alpha": [1.0, 2.0]}, fixed={"factors": 16})
    assert "factors" in space and space["alpha"] == Choice((1.0, 2.0))


def test_a_dimension_its_condition_rules_out_is_an_error():
    with pytest.raises(RecsysError) as err:  # plain mf trains bpr: eta would never be searched
        search_space("mf", {"eta": [0.0, 0.5]}, source="space.yaml")
    assert str(err.value) == ("space.yaml: eta is searched only where loss is one of relmf, ubpr, "
                              "and loss is 'bpr' here; set loss to one of them or drop eta")
    for ok in ({"name": "relmf"}, {"fixed": {"loss": "ubpr"}}, {"varied": ["loss"]}):
        name = ok.pop("name", "mf")  # a preset, a fixed loss, or a grid over it: searched
        assert "eta" in search_space(name, {"eta": [0.0, 0.5]}, **ok)[0]


def test_conditions_follow_the_loss():
    eta = search_space("mf")[0]["eta"]
    assert applies(eta, {"loss": "relmf"}) and not applies(eta, {"loss": "bce"})


@pytest.mark.parametrize("name", ["als", "bpr", "ease", "mf", "relmf", "ubpr", "gnolr",
                                  "two_tower", "lightgcn", "sgl", "simgcl", "xsimgcl", "llmrec"])
def test_every_trainable_model_has_a_space_of_valid_values(name):
    space, _ = search_space(name)
    assert space, f"{name} has nothing for `recsys tune` to search"
    for param, dim in space.items():
        ends = dim.values if isinstance(dim, Choice) else (dim.low, dim.high)
        for value in ends:  # both ends of every range are values the model accepts
            create_model(name, **{param: int(value) if isinstance(dim, Int) else value})


def test_graph_presets_search_their_own_contrastive_settings():
    ssl = search_space("sgl")[0]
    assert applies(ssl["drop_rate"], {"augment": "sgl"}) and not applies(ssl["eps"], {"augment": "sgl"})
    assert not applies(ssl["ssl_weight"], {})  # plain lightgcn: no contrastive loss to weigh


# ---- studies ------------------------------------------------------------------------------
def test_study_scores_trials_on_validation_and_refits_the_best(train):
    result = tune("ease", train, trials=3, seed=1, progress=False)
    table = result.trials
    assert len(table) == 3 and (table["state"] == "COMPLETE").all()
    best = table.loc[table["value"].idxmax()]
    assert result.best_trial == best["trial"] and result.value == best["value"]
    assert result.params["regularization"] == best["regularization"]
    # the trial's score is the validation NDCG@20 of that model fitted without the held-out part
    fit, valid = holdout(train, 0.1, seed=1)
    again = create_model("ease", regularization=best["regularization"]).fit(fit)
    assert validation_scorer("ndcg@20", fit, valid)(again) == pytest.approx(result.value)
    # and the returned model is refitted on all of the training data
    assert result.model.fit_info_["n_pairs"] == train.nnz
    assert result.model.regularization == best["regularization"]


def test_folds_score_each_trial_as_the_mean_over_that_many_holdouts(train):
    result = tune("ease", train, trials=2, folds=3, seed=4, progress=False)
    best = result.trials.loc[result.trials["value"].idxmax()]
    scores = []
    for seed in (4, 5, 6):  # the study's seed, then the next ones
        fit, valid = holdout(train, 0.1, seed=seed)
        model = create_model("ease", regularization=best["regularization"]).fit(fit)
        scores.append(validation_scorer("ndcg@20", fit, valid)(model))
    assert best["fold_values"] == pytest.approx(scores)
    assert result.value == pytest.approx(np.mean(scores)) and len(set(scores)) == 3
    with pytest.raises(RecsysError, match="folds must be an integer from 1 to 100, got 0"):
        tune("ease", train, trials=1, folds=0, progress=False)


@pytest.mark.parametrize("folds", [101, 10**20, 2.0, True])
def test_folds_out_of_range_fail_at_once_in_python_the_cli_and_configs(train, train_file,
                                                                       tmp_path, capsys, folds):
    """A huge fold count is one error line before any split is built (it used to build them
    all first, hanging), from Python, the CLI and a compare config alike."""
    with pytest.raises(RecsysError, match=f"folds must be an integer from 1 to 100, got {folds!r}"):
        tune("ease", train, trials=1, folds=folds, progress=False)
    if isinstance(folds, int) and not isinstance(folds, bool):
        assert main(["tune", "--model", "ease", "--train", str(train_file), "--trials", "1",
                     "--folds", str(folds), "--no-mlflow", "--out", str(tmp_path / "t")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"recsys: error: folds must be an integer from 1 to 100, got {folds}"]
        config = tmp_path / "c.yaml"
        config.write_text("data: {kind: simulate, n_users: 20, n_items: 10, n_interactions: 50}\n"
                          f"models:\n  - name: ease\n    tune: {{trials: 1, folds: {folds}}}\n")
        with pytest.raises(RecsysError, match="folds must be an integer from 1 to 100"):
            load_config(config)


def test_folds_take_numpy_integers(train):
    got = tune("ease", train, trials=1, folds=np.int64(2), progress=False)
    expected = tune("ease", train, trials=1, folds=2, progress=False)
    assert got.value == pytest.approx(expected.value)
    assert got.trials["fold_values"][0] == pytest.approx(expected.trials["fold_values"][0])


def test_fixed_parameters_are_not_searched_and_conditions_apply(train):
    result = tune("mf", train, fixed={**MF_FAST, "loss": "bce"}, trials=3, progress=False)
    assert {"factors", "eta", "clip", "beta"}.isdisjoint(result.trials.columns)
    assert {"lr", "reg"} <= set(result.trials.columns)
    assert result.metric == "ndcg@20" and result.model.factors == 8
    assert result.trials["epochs"].notna().all()  # each epoch's validation reached the pruner
    relmf = tune("relmf", train, fixed=MF_FAST, trials=2, progress=False)
    assert {"eta", "clip", "beta"} <= set(relmf.trials.columns)
    assert relmf.metric == "snips_recall@20"  # unbiased losses select on SNIPS
    assert relmf.model.loss == "relmf"
    sgl = tune("sgl", train, fixed={"factors": 8, "layers": 1, "epochs": 2, "warmup": 0,
                                    "device": "cpu"}, trials=2, progress=False)
    assert {"lr", "reg", "ssl_weight", "temperature", "drop_rate"} <= set(sgl.trials.columns)
    assert "eps" not in sgl.trials.columns and sgl.model.augment == "sgl"


def test_pruning_callback_stops_a_trial_below_the_median():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    for epoch in (1, 2):
        _Pruning(good, optuna).on_epoch_end(epoch, {"loss": 1.0, "valid": 0.5})
    study.tell(good, 0.5)
    bad = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        _Pruning(bad, optuna).on_epoch_end(1, {"loss": 1.0, "valid": 0.1})


def test_a_study_where_every_trial_fails_says_why(train):
    with pytest.raises(RecsysError, match="no trial finished.*first error: .*loss became"):
        tune("mf", train, fixed={**MF_FAST, "lr": 1e30, "loss": "bce"}, trials=2, progress=False)
    with pytest.raises(RecsysError, match="nothing to tune"):
        tune("ease", train, fixed={"regularization": 3.0}, trials=2, progress=False)
    with pytest.raises(RecsysError, match="metric 'ndcg@x'"):
        tune("ease", train, metric="ndcg@x", trials=2, progress=False)
    one_each = train.with_pairs(*train.coo, np.r_[True, np.diff(train.coo[0]) != 0])
    assert one_each.user_degree.max() == 1  # one item per user: nothing to hold out
    with pytest.raises(RecsysError) as err:
        tune("ease", one_each, trials=2, progress=False)
    assert str(err.value) == ("tune ease: holding out 0.1 of each user's items leaves no "
                              "validation pairs (the users have too few items); raise valid_frac")


# ---- the command line and MLflow ------------------------------------------------------------
def test_tune_command_saves_a_model_folder_with_its_study_and_logs_mlflow(
        sqlite_store, train_file, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("regularization: {low: 1, high: 1000, log: true}\n")
    out = tmp_path / "tuned"
    assert main(["tune", "--model", "ease", "--train", str(train_file), "--trials", "3",
                 "--folds", "2", "--space", str(space), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tuned ease: validation ndcg@20" in printed and "3 complete" in printed
    study = pd.read_csv(out / "study.csv")
    summary = json.loads((out / "study.json").read_text())
    assert len(study) == 3 and summary["best_value"] == pytest.approx(study["value"].max())
    assert summary["folds"] == 2 and study["fold_values"].notna().all()
    assert (study["regularization"].between(1, 1000)).all()
    model = load_model(out)
    assert model.regularization == summary["params"]["regularization"]

    client = MlflowClient(sqlite_store)
    runs = client.search_runs([client.get_experiment_by_name("recsys-tune").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert sorted(r.data.metrics["valid_ndcg_at_20"] for r in trials) == pytest.approx(sorted(study["value"]))
    assert parent.data.metrics["best_valid_ndcg_at_20"] == pytest.approx(summary["best_value"])
    assert float(parent.data.params["best.regularization"]) == pytest.approx(model.regularization)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/study.csv", "tune/study.json", "tune/optimization_history.png"} <= artifacts
    assert any(a.path == "model/config.json" for a in client.list_artifacts(parent.info.run_id, "model"))

    recs = tmp_path / "recs.parquet"  # the folder is an ordinary model folder
    assert main(["recommend", "--model", str(out), "--k", "5", "--out", str(recs)]) == 0
    frame = pd.read_parquet(recs)
    assert len(frame) == 5 * len(model.user_map_)


@pytest.mark.parametrize("name, curve", [("mf", "epoch_valid_ndcg_at_20"),
                                         ("relmf", "epoch_valid_snips_recall_at_20")])
def test_trial_runs_name_their_curves_by_metric_and_log_each_folds_score(sqlite_store, train,
                                                                         name, curve):
    """A nested trial run's epoch curve is named by the metric it selects on (not
    `epoch_valid_valid`), and with folds it has each split's score beside their mean."""
    import mlflow

    mlflow.set_experiment("trials")  # in this store, not one an earlier test made active
    with mlflow.start_run() as parent:
        result = tune(name, train, fixed={**MF_FAST, "warmup": 0}, trials=2, folds=2,
                      mlflow_runs=True, progress=False)
    client = MlflowClient(sqlite_store)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(runs) == 2
    key = f"fold_valid_{result.metric}".replace("@", "_at_")
    for run in runs:
        assert curve in run.data.metrics and "epoch_valid_valid" not in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, curve)) == MF_FAST["epochs"]
        folds = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                         key=lambda m: m.step)]
        row = result.trials.loc[result.trials["trial"] == int(run.data.params["trial"])].iloc[0]
        assert folds == pytest.approx(row["fold_values"])
        assert run.data.metrics[key.replace("fold_", "")] == pytest.approx(np.mean(folds))


def test_tune_command_rejects_bad_input(train_file, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("regularisation: [1, 2]\n")
    args = ["tune", "--model", "ease", "--train", str(train_file), "--no-mlflow",
            "--out", str(tmp_path / "o")]
    assert main([*args, "--space", str(space)]) == 2
    assert "space.yaml: the model has no parameter 'regularisation'" in capsys.readouterr().err
    assert main([*args, "--param", "colour=3"]) == 2
    assert "no parameter(s) colour" in capsys.readouterr().err
    for flag, value, why in (("--trials", "0", "0 is not a positive integer"),
                             ("--timeout", "nan", "'nan' is not a finite number"),  # endless
                             ("--timeout", "-1", "'-1' is not a number > 0")):
        with pytest.raises(SystemExit) as exit_:
            main([*args, flag, value])
        assert exit_.value.code == 2
        assert f"recsys: error: argument {flag}: {why}" in capsys.readouterr().err
    for text, message in ((None, "is a folder, not a search-space file"),
                          ("", "empty search-space file; give lines such as"),
                          (b"\xff\xfe\x00", "not a text file (a search space is YAML)")):
        if text is None:
            space = tmp_path / "a-folder"
            space.mkdir()
        else:
            space = tmp_path / "other.yaml"
            space.write_bytes(text if isinstance(text, bytes) else text.encode())
        assert main([*args, "--space", str(space)]) == 2
        assert f"recsys: error: {space}: {message}" in capsys.readouterr().err
    space.write_text("regularization: {low: 1, high: 10}\n")
    assert main([*args, "--space", str(space), "--param", "regularization=3"]) == 2
    assert (f"recsys: error: {space}: regularization is also fixed by --param; give it in one "
            "place") in capsys.readouterr().err
    with pytest.raises(RecsysError, match="the tuning budget must be positive"):
        tune("ease", pd.DataFrame(), timeout=float("nan"))
    for frac in ("0", "1.5"):
        assert main([*args, "--valid-frac", frac]) == 2
        assert f"--valid-frac must be in (0, 1), got {float(frac)}" in capsys.readouterr().err


TUNED = """
experiment: tuned
data: {kind: simulate, n_users: 300, n_items: 200, n_interactions: 4000, seed: 0}
models:
  - name: pop
  - name: ease
    tune: {trials: 2, space: {regularization: {low: 5, high: 500}}}
k: [5, 20]
"""


def test_compare_tunes_a_model_with_its_trials_nested(sqlite_store, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(TUNED)
    assert main(["compare", "--config", str(config)]) == 0
    assert "ease (tuned)" in capsys.readouterr().out
    client = MlflowClient(sqlite_store)
    runs = client.search_runs([client.get_experiment_by_name("tuned").experiment_id])
    by_name = {r.data.tags["mlflow.runName"]: r for r in runs}
    ease = by_name["ease (tuned)"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ease.info.run_id]
    assert len(trials) == 2 and "ndcg_at_20" in ease.data.metrics
    assert 5 <= float(ease.data.params["best.regularization"]) <= 500
    bad = tmp_path / "bad.yaml"
    bad.write_text(TUNED.replace("regularization: {low", "regularisation: {low"))
    with pytest.raises(RecsysError, match="tune.space: the model has no parameter 'regularisation'"):
        load_config(bad)


def test_snips_validation_uses_the_datas_own_propensities(train):
    from recsys.data.propensity import Propensity

    theta = Propensity(item=np.random.default_rng(0).uniform(0.05, 1.0, train.n_items))
    weighted = train.with_propensity(theta)
    result = tune("relmf", weighted, fixed=MF_FAST, trials=2, metric="snips_recall@10", progress=False)
    fit, valid = holdout(weighted, 0.1, seed=0)
    params = {k: v for k, v in result.params.items() if k != "progress"}
    again = create_model("relmf", **params, progress=False).fit(fit.with_propensity(theta), valid=valid)
    given = validation_scorer("snips_recall@10", fit, valid, propensity=theta)(again)
    from_popularity = validation_scorer("snips_recall@10", fit, valid)(again)
    assert result.value == pytest.approx(given) and given != pytest.approx(from_popularity)


def test_tune_reads_side_files_and_level_names_as_train_does(tmp_path, capsys):
    rng = np.random.default_rng(0)
    log = pd.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 30, 300)],
                        "item_id": [f"i{i}" for i in rng.integers(0, 20, 300)],
                        "level": rng.choice(["view", "cart"], 300)})
    log.to_csv(tmp_path / "events.csv", index=False)
    space = tmp_path / "space.yaml"
    space.write_text("factors: [4]\nepochs: 1\n")
    args = ["tune", "--train", str(tmp_path / "events.csv"), "--no-mlflow", "--trials", "1"]
    assert main([*args, "--model", "gnolr", "--levels", "view<cart", "--space", str(space),
                 "--out", str(tmp_path / "g")]) == 0
    assert load_model(tmp_path / "g").level_names_ == ("view", "cart")
    pd.DataFrame({"item_id": [f"i{i}" for i in range(20)], "genre": list("ab") * 10}).to_csv(
        tmp_path / "items.csv", index=False)
    assert main([*args, "--model", "als", "--item-features", str(tmp_path / "items.csv"),
                 "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.endswith(
        "recsys: error: --item-features: model 'als' does not use item features (it reads "
        "nothing but the interactions); models that do: two_tower\n")
