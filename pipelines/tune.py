"""Hyperparameter search with Optuna (an optional dependency: the [tune] extra).

A study searches a model's space (`search_space` on the model class, recsys/models/space.py)
with a seeded TPE sampler. Every trial fits on the training data less a validation split
carved from it (`holdout`, per user) and is scored on that split: a ranking metric, or a
SNIPS estimate (`ips_metrics`) for unbiased losses, whose point is to not reward the exposure
bias that biased validation clicks carry. Torch models report each epoch's validation score
through the `on_epoch_end` callback, and a median pruner stops trials that fall behind. The
best parameters are then refitted on all the training data. With MLflow, each trial is a
nested run of the active (study) run.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from recsys.atomic import write_text
from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity, item_propensity
from recsys.data.split import holdout
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import evaluate
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.evaluate.unbiased import ips_metrics
from recsys.models.base import (
    BaseRecommender,
    coerce_params,
    create_model,
    get_model_class,
    preset_params,
)
from recsys.models.mf import UNBIASED
from recsys.models.space import Choice, Dimension, Int, applies
from recsys.ranking import MAX_K

log = logging.getLogger("recsys")

IPS_METRICS = ("snips_recall", "naive_recall", "ips_dcg", "naive_dcg")
# validation propensities when the data brings none: Saito et al.'s (n_i / max n)^0.5,
# weights 1/theta capped at 100
VALID_ETA, VALID_CLIP = 0.5, 0.01
PRUNE_AFTER = 5  # epochs a trial runs (after the model's own warm-up) before it can be pruned
# validation splits per trial at most: each is a copy of the training data held for the whole
# study and a fit per trial, and the mean's noise falls as 1/sqrt(folds), so beyond a few tens
# a larger value only costs (a huge one would hang building the splits before the first trial)
MAX_FOLDS = 100


@dataclass
class TuneResult:
    """A finished study: the refitted model and what the trials found."""

    model: BaseRecommender  # the best parameters, refitted on all the training data
    params: dict[str, Any]  # all of its parameters
    best_params: dict[str, Any]  # the searched ones
    value: float  # the best trial's validation score
    best_trial: int
    metric: str
    trials: pd.DataFrame  # one row per trial: trial, state, value, seconds, epochs, error, params
    space: dict[str, Dimension]
    fixed: dict[str, Any]


def _optuna():
    try:
        import optuna
    except ImportError:
        raise RecsysError("tuning needs Optuna: pip install 'recsys[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one line each
    # multivariate TPE (correlated parameters such as ALS's regularization and alpha) is
    # marked experimental, and says so once per study
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def default_metric(params: Mapping[str, Any]) -> str:
    """SNIPS recall@20 for unbiased losses, NDCG@20 otherwise."""
    return "snips_recall@20" if params.get("loss") in UNBIASED else "ndcg@20"


def check_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if name not in (*RANKING_METRICS, *IPS_METRICS) or not k.isdigit() or not 0 < int(k) <= MAX_K:
        raise RecsysError(f"metric {metric!r} is not METRIC@K with METRIC one of "
                          f"{', '.join((*RANKING_METRICS, *IPS_METRICS))}")
    return name, int(k)


def check_folds(folds: Any) -> int:
    """`folds` as an int in 1..MAX_FOLDS (numpy integers too), else one error line."""
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) \
            or not 1 <= folds <= MAX_FOLDS:
        raise RecsysError(f"folds must be an integer from 1 to {MAX_FOLDS}, got {folds!r}")
    return int(folds)


def validation_scorer(metric: str, fit: Interactions, valid: Interactions, *,
                      propensity: Propensity | None = None, users=None) -> Callable[[Any], float]:
    """model -> its `metric` on `valid`, `fit`'s items excluded; IPS metrics weigh each
    validation click by 1/theta (`propensity`, default: (n_i / max n)^0.5 floored at 0.01)."""
    name, k = check_metric(metric)
    if name in RANKING_METRICS:
        return lambda model: evaluate(model, valid, train=fit, k=k, users=users)[metric]
    propensity = propensity or item_propensity(fit.item_popularity + valid.item_popularity,
                                               VALID_ETA, clip=VALID_CLIP)
    return lambda model: ips_metrics(model, valid, train=fit, propensity=propensity, k=k,
                                     users=users)[metric]


class _Pruning:
    """Reports each epoch's validation score to the trial; prunes it below the median."""

    def __init__(self, trial, optuna) -> None:
        self.trial, self.optuna = trial, optuna

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if "valid" not in logs or not math.isfinite(logs["valid"]):
            return
        self.trial.report(float(logs["valid"]), epoch)
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"epoch {epoch}: validation {logs['valid']:.4g} below the median")


def _suggest(trial, name: str, dim: Dimension):
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.values))
    if isinstance(dim, Int):
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, log=dim.log)


def _sample(trial, space: Mapping[str, Dimension], base: Mapping[str, Any]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for name, dim in space.items():
        if applies(dim, {**base, **chosen}):
            chosen[name] = _suggest(trial, name, dim)
    return chosen


def tune(name: str, train: Interactions, *, fixed: Mapping[str, Any] | None = None,
         space: Mapping[str, Dimension] | None = None, trials: int | None = 20,
         timeout: float | None = None, metric: str | None = None, valid_frac: float = 0.1,
         folds: int = 1, valid_users: int = 10000, propensity: Propensity | None = None,
         seed: int = 0, mlflow_runs: bool = False, progress: bool = True) -> TuneResult:
    """Search model `name`'s parameters on a validation split of `train`; refit the best.

    `fixed` parameters are not searched (preset values are, as starting points); `space`
    defaults to the model's own. The budget is `trials` trials and/or `timeout` seconds,
    whichever ends first. `metric` (default: `default_metric`) is maximised on validation;
    `propensity` weighs IPS metrics (default: the data's own, else from item popularity).
    With `folds` > 1 each trial is fitted and scored on that many validation splits (repeated
    random holdouts, seeds `seed`, `seed` + 1, ...) and its value is the mean: on small data one
    split's score is noisy enough to pick a poor trial (bench/RESULTS.md, Saito et al.'s
    benchmark), and the mean of k splits has about 1/sqrt(k) of its noise, for k times the
    fits. Pruning reads the first split's epochs.
    The study is seeded by `seed` (sampler, validation splits, and the model's `seed`).
    With `mlflow_runs`, each trial is logged as a nested run of the active MLflow run.
    """
    optuna = _optuna()
    if trials is None and timeout is None:
        raise RecsysError("tune needs a budget: a number of trials, a timeout, or both")
    if trials is not None and trials <= 0 or timeout is not None and not (
            math.isfinite(timeout) and timeout > 0):
        raise RecsysError(f"the tuning budget must be positive, got trials={trials}, timeout={timeout}")
    cls = get_model_class(name)
    defaults = cls.param_defaults()
    fixed = coerce_params(cls, dict(fixed or {}), model=name)
    base = {**preset_params(name), **fixed}
    for key, value in (("progress", False), ("seed", seed)):
        if key in defaults and key not in fixed:
            base[key] = value
    create_model(name, **base)  # unknown parameters fail here, before any trial
    space = {k: v for k, v in (cls.search_space if space is None else space).items()
             if k not in fixed}
    if not space:
        raise RecsysError(f"{name}: nothing to tune (no search space, or every parameter fixed)")
    metric = metric or default_metric({**defaults, **base})
    kind, k = check_metric(metric)
    if "valid_metric" in defaults and "valid_metric" not in fixed:
        # early stopping on the metric the study maximises (its k, for the SNIPS ones)
        base["valid_metric"] = metric if kind in RANKING_METRICS else f"recall@{k}"

    folds = check_folds(folds)
    splits = [_ValidSplit(train, valid_frac, seed + f, metric, valid_users,
                          propensity or train.propensity) for f in range(folds)]
    if splits[0].valid.nnz == 0:  # every trial would fail on it: say why before the first
        raise RecsysError(f"tune {name}: holding out {valid_frac} of each user's items leaves no "
                          "validation pairs (the users have too few items); raise valid_frac")
    warmup = int({**defaults, **base}.get("warmup", 0) or 0)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup + PRUNE_AFTER))

    def objective(trial) -> float:
        params = {**base, **_sample(trial, space, base)}
        run = _TrialRun(trial, params, metric, optuna) if mlflow_runs else None
        start = time.perf_counter()
        values, epochs = [], []
        try:
            for fold, split in enumerate(splits):  # the first split's epochs drive pruning
                model = create_model(name, **params)
                callbacks = [_Pruning(trial, optuna), *(run.callbacks if run else ())]
                model.fit(split.fit, valid=split.valid, callbacks=callbacks if fold == 0 else ())
                value = float(split.score(model))
                if not math.isfinite(value):
                    raise RecsysError(f"validation {metric} is {value}"
                                      + (f" on split {fold + 1} of {folds}" if folds > 1 else ""))
                values.append(value)
                epochs.append(getattr(model, "fit_info_", {}).get("best_epoch"))
            value = sum(values) / folds
        except RecsysError as exc:
            trial.set_user_attr("error", str(exc))
            log.warning("tune %s: trial %d failed: %s", name, trial.number, exc)
            if run:
                run.end("FAILED", error=str(exc))
            raise
        except optuna.TrialPruned:
            if run:
                run.end("KILLED")
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)
        if epochs[0] is not None:
            trial.set_user_attr("best_epoch", epochs[0] if folds == 1 else epochs)
        if folds > 1:
            trial.set_user_attr("fold_values", values)
        if run:
            run.end("FINISHED", value=value, fold_values=values if folds > 1 else ())
        return value

    bar = tqdm(total=trials, desc=f"tune {name}", unit="trial", disable=not progress)

    def advance(study, trial) -> None:
        bar.update(1)
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if finished:
            bar.set_postfix({metric: round(study.best_value, 4),
                             "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)})

    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(RecsysError,),
                       callbacks=[advance])
    finally:
        bar.close()
    table = trials_table(study)
    if not (table["state"] == "COMPLETE").any():
        errors = table["error"].dropna() if "error" in table else []
        raise RecsysError(f"tune {name}: no trial finished ({len(table)} tried)"
                          + (f"; first error: {errors.iloc[0]}" if len(errors) else ""))
    best = study.best_trial
    params = {**base, **best.params}
    if "progress" in defaults and "progress" not in fixed:
        params["progress"] = progress
    log.info("tune %s: best %s %.4f (trial %d); refitting on all training data",
             name, metric, best.value, best.number)
    model = create_model(name, **params).fit(train)
    return TuneResult(model, params, dict(best.params), float(best.value), best.number, metric,
                      table, dict(space), fixed)


class _ValidSplit:
    """One validation split of the training data (`holdout` with `seed`) and its scorer."""

    def __init__(self, train: Interactions, frac: float, seed: int, metric: str, limit: int,
                 propensity: Propensity | None) -> None:
        self.fit, self.valid = holdout(train, frac, seed=seed)
        if train.propensity is not None:  # the split's parts come from the same exposure
            self.fit = self.fit.with_propensity(train.propensity)
        self.score = validation_scorer(metric, self.fit, self.valid, propensity=propensity,
                                       users=_valid_users(self.valid, limit, seed))


def _valid_users(valid: Interactions, limit: int, seed: int):
    import numpy as np

    with_items = np.flatnonzero(valid.user_degree > 0)
    if len(with_items) <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(with_items, limit, replace=False))


def trials_table(study) -> pd.DataFrame:
    """One row per trial: trial, state, value (a pruned trial's: its last epoch's), seconds,
    epochs (validated), best_epoch, error, then the sampled parameters."""
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     "seconds": t.user_attrs.get("seconds"),
                     "epochs": max(t.intermediate_values, default=None),
                     "best_epoch": t.user_attrs.get("best_epoch"), "error": t.user_attrs.get("error"),
                     **({"fold_values": t.user_attrs["fold_values"]}
                        if "fold_values" in t.user_attrs else {}),
                     **t.params})
    return pd.DataFrame(rows)


class _TrialRun:
    """A nested MLflow run for one trial: its parameters, per-epoch curves (of the first split)
    and score (with several splits, each split's score too, as `fold_valid_<metric>` by step)."""

    def __init__(self, trial, params: Mapping[str, Any], metric: str, optuna) -> None:
        import mlflow

        from pipelines.tracking import EpochLogger

        self.mlflow, self.metric = mlflow, metric
        self.run = mlflow.start_run(run_name=f"trial {trial.number}", nested=True)
        mlflow.log_params({**params, "trial": trial.number})
        # curves named by what the epochs are selected on, as README says (`epoch_valid_<metric>`;
        # it was `epoch_valid_valid`): the model's valid_metric, SNIPS recall for unbiased losses
        valid = params.get("valid_metric", "valid")
        if params.get("loss") in UNBIASED:
            valid = f"snips_recall@{valid.partition('@')[2]}"
        self.callbacks = [EpochLogger(valid)]

    def end(self, status: str, *, value: float | None = None, error: str | None = None,
            fold_values: Sequence[float] = ()) -> None:
        from pipelines.tracking import metric_key

        for step, fold_value in enumerate(fold_values):
            self.mlflow.log_metric(metric_key(f"fold_valid_{self.metric}"), fold_value, step=step)
        if value is not None:
            self.mlflow.log_metric(metric_key(f"valid_{self.metric}"), value)
        state = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL"}[status]
        self.mlflow.set_tag("trial_state", state)
        if error:
            self.mlflow.set_tag("error", error)
        self.mlflow.end_run(status=status)


# ---- the study on disk and in MLflow --------------------------------------------------------
def study_summary(result: TuneResult, *, trials: int | None, timeout: float | None, seed: int,
                  valid_frac: float, folds: int = 1) -> dict[str, Any]:
    states = result.trials["state"].value_counts().to_dict()
    return {"model": result.model.name, "metric": result.metric, "best_value": result.value,
            "best_trial": result.best_trial, "best_params": result.best_params,
            "params": result.params, "fixed": result.fixed,
            "space": {k: {"kind": type(d).__name__.lower(), **asdict(d)} for k, d in result.space.items()},
            "budget": {"trials": trials, "timeout": timeout}, "seed": seed, "valid_frac": valid_frac,
            "folds": folds,
            "trials": int(len(result.trials)), "states": states}


def write_study(result: TuneResult, out: str | Path, summary: Mapping[str, Any]) -> None:
    """study.csv (every trial) and study.json (the summary) in folder `out`, each written to
    a temporary file first and renamed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "study.csv", result.trials.to_csv(index=False))
    write_text(out / "study.json", json.dumps(summary, indent=2, default=str))


def history_figure(trials: pd.DataFrame, metric: str):
    """Optimisation history: each finished trial's score, the best so far, and where pruned
    trials stood when they were stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    done = trials[trials["state"] == "COMPLETE"]
    ax.plot(done["trial"], done["value"], "o", label="trial")
    ax.plot(done["trial"], done["value"].cummax(), "-", label="best so far")
    pruned = trials[trials["state"] == "PRUNED"]
    if len(pruned):
        ax.plot(pruned["trial"], pruned["value"], "x", color="grey", label="pruned (last epoch)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    fig.tight_layout()
    return fig


def log_study(result: TuneResult, summary: Mapping[str, Any]) -> None:
    """Log the study in the active MLflow run: best parameters (`best.NAME`), the best score,
    study.csv/json and the optimisation history plot under `tune/`."""
    import matplotlib.pyplot as plt
    import mlflow

    from pipelines.tracking import metric_key

    mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
    mlflow.log_metric(metric_key(f"best_valid_{result.metric}"), result.value)
    mlflow.log_text(result.trials.to_csv(index=False), "tune/study.csv")
    mlflow.log_text(json.dumps(summary, indent=2, default=str), "tune/study.json")
    fig = history_figure(result.trials, result.metric)
    mlflow.log_figure(fig, "tune/optimization_history.png")
    plt.close(fig)
