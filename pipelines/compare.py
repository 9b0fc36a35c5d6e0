"""Train and compare models as MLflow runs: a parent run per comparison, a nested run per
(model, parameters), a report table and plots, and the winner registered under an alias.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.data  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.data.code_dataset_source import CodeDatasetSource  # noqa: E402
from mlflow.data.dataset import Dataset  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pipelines.config import CompareConfig, FileData, ModelConfig  # noqa: E402
from pipelines.export import export_run, log_model_dir  # noqa: E402
from pipelines.tracking import (  # noqa: E402
    OWNER_TAG,
    EpochLogger,
    close_orphaned_runs,
    fingerprint,
    metric_key,
    no_integer_schema_hint,
    owner,
    use_experiment,
)
from pipelines.tune import log_study, study_summary, tune  # noqa: E402
from recsys.data.files import aligned_side_features, with_side_files  # noqa: E402
from recsys.data.interactions import Interactions  # noqa: E402
from recsys.data.io import read_events  # noqa: E402
from recsys.data.simulate import simulate  # noqa: E402
from recsys.data.split import split  # noqa: E402
from recsys.evaluate.evaluator import evaluable_users, evaluate  # noqa: E402
from recsys.evaluate.graded import graded_metrics  # noqa: E402
from recsys.evaluate.unbiased import candidate_metrics  # noqa: E402
from recsys.models.base import create_model, get_model_class  # noqa: E402
from recsys.models.space import search_space  # noqa: E402

log = logging.getLogger("recsys")
DIGEST_CHARS = 16  # MLflow shows a dataset's digest; ours is the start of its sha256 fingerprint
# Below this many test users a metric in [0, 1] has a standard error of up to 0.5/sqrt(n) > 0.05,
# as large as the gaps between the models being compared.
MIN_TEST_USERS = 100


@dataclass
class Prepared:
    train: Interactions
    test: Interactions
    rule: str
    simulation: object | None = None


def prepare_data(config: CompareConfig) -> Prepared:
    """Train/test from the config's source; simulated data also keeps its unbiased test set."""
    d = config.data
    s = config.split
    if isinstance(d, FileData):
        frame = read_events(d.path)
        data = Interactions.from_frame(frame, user_col=d.user_col, item_col=d.item_col,
                                       rating_col=d.rating_col, min_rating=d.min_rating,
                                       time_col=d.time_col, level_col=d.level_col,
                                       level_names=d.levels,
                                       levels_from_rating=d.levels_from_rating, source=d.path)
        train, test = split(data, s.how, test_frac=s.test_frac, seed=s.seed)
        train = with_side_files(train, item_features=d.item_features,
                                user_features=d.user_features, item_text=d.item_text)
        sides = "".join(f" + {n}={getattr(d, n)}" for n in ("item_features", "user_features",
                                                            "item_text") if getattr(d, n))
        return Prepared(train, aligned_side_features(test, train),
                        f"{d.path}{sides}: {train.meta['split']}")
    sim = simulate(d.n_users, d.n_items, d.n_interactions, popularity_bias=d.popularity_bias,
                   seed=d.seed)
    rule = f"simulate({d.model_dump()}) train/biased-test periods"
    return Prepared(sim.train, sim.test, rule, sim)


def run_name(model: str, params: dict) -> str:
    return model + "".join(f" {k}={v}" for k, v in sorted(params.items()))


def compare(config: CompareConfig, *, progress: bool = True) -> pd.DataFrame:
    """Run every model variant of `config` as nested MLflow runs; returns the report table.

    A failing variant is marked FAILED with its error and the others still run. A progress
    bar counts the runs, naming the current one and how many finished and failed.
    """
    experiment = use_experiment(config.experiment)
    report_attrs = {"experiment_id": experiment.experiment_id}
    orphans = close_orphaned_runs(experiment.experiment_id)
    if orphans:
        log.warning("marked %d runs of an interrupted comparison KILLED; starting afresh", len(orphans))
    data = prepare_data(config)
    small = small_test_warnings(data)
    for line in small:
        log.warning("%s", line)
    report_attrs["warnings"] = small
    data_fp = fingerprint(data.train, data.rule)
    inputs = data_inputs(data, config, data_fp)
    variants = [(m, params, run_name(m.name, {k: v for k, v in params.items() if k in m.grid})
                 + (" (tuned)" if m.tune is not None else ""))
                for m in config.models for params in m.variants()]
    rows, curves = [], {}
    with mlflow.start_run(run_name=f"compare {config.experiment}", tags={OWNER_TAG: owner()}) as parent:
        mlflow.log_params({"data": data.rule[:500], "models": len(config.models),
                           "select": config.select})
        mlflow.set_tag("dataset_fingerprint", data_fp)
        log_inputs(inputs)
        with tqdm(total=len(variants), desc="compare", unit="run", disable=not progress) as bar:
            for model_cfg, params, name in variants:
                bar.set_description(f"compare: {name}")
                row, history = _run_one(model_cfg, params, name, data, config, data_fp, inputs)
                rows.append(row)
                if history:
                    curves[name] = history
                bar.set_postfix_str(f"{_count(rows, 'FINISHED')} finished, "
                                    f"{_count(rows, 'FAILED')} failed", refresh=False)
                bar.update()
            bar.set_description("compare")
        report = pd.DataFrame(rows)
        _log_report(report, curves, data, config)
        winner = _winner(report, config)
        mlflow.set_tag("winner", winner)
    report.attrs.update(report_attrs, parent_run_id=parent.info.run_id)
    if winner and config.register_as:
        run_id = report.loc[report["run"] == winner, "run_id"].iloc[0]
        report.attrs["registered_version"] = export_run(run_id, config.register_as, config.alias)
    return report


def small_test_warnings(data: Prepared) -> list[str]:
    """One line per test set (the held-out split; the simulator's uniformly exposed set) with
    fewer than MIN_TEST_USERS users to average over, saying how large the noise can be."""
    users, pairs = evaluable_users(data.test, data.train)
    sets = [("test set", users, f"{pairs} test pairs outside training; "
                                f"{data.test.n_users - users} of {data.test.n_users} users have none")]
    if data.simulation is not None:
        unbiased = data.simulation.unbiased_test
        positive = len(np.unique(unbiased.users[unbiased.labels > 0]))
        sets.append(("unbiased test set", positive, "those with a relevant candidate"))
    return [f"the {name} has only {n} users to average over ({detail}): a metric's standard "
            f"error can reach {0.5 / np.sqrt(max(n, 1)):.2f}, so smaller differences between "
            f"models may be noise; use more data or a larger test fraction"
            for name, n, detail in sets if n < MIN_TEST_USERS]


def _count(rows: list[dict], status: str) -> int:
    return sum(row["status"] == status for row in rows)


def data_inputs(data: Prepared, config: CompareConfig, fp: str) -> list[tuple[Dataset, str]]:
    """The train and test sets as MLflow datasets (name, digest, source, rows, schema), each
    with its context; the digest is the start of the set's fingerprint."""
    if isinstance(config.data, FileData):
        source = str(Path(config.data.path).resolve())
        name = Path(config.data.path).name
    else:
        source = CodeDatasetSource({"mlflow.source.name": "recsys.data.simulate",
                                    "recsys.rule": data.rule[:500]})
        name = "simulated"
    test_fp = fingerprint(data.test, data.rule)
    return [(mlflow.data.from_pandas(part.to_frame(), source=source, name=f"{name} {context}",
                                     digest=digest[:DIGEST_CHARS]), context)
            for part, context, digest in ((data.train, "training", fp), (data.test, "testing", test_fp))]


def log_inputs(inputs: list[tuple[Dataset, str]]) -> None:
    with no_integer_schema_hint():  # MLflow infers the datasets' schemas as it logs them
        for dataset, context in inputs:
            mlflow.log_input(dataset, context=context)


def _run_one(model_cfg: ModelConfig, params, name, data: Prepared, config: CompareConfig, fp, inputs):
    model_name = model_cfg.name
    logger = EpochLogger(config.select)
    with mlflow.start_run(run_name=name, nested=True, tags={OWNER_TAG: owner()}) as run:
        mlflow.log_params({"model": model_name, **params})
        mlflow.set_tag("dataset_fingerprint", fp)
        log_inputs(inputs)
        try:
            quiet = {"progress": False} if "progress" in get_model_class(model_name).param_defaults() else {}
            if model_cfg.tune is not None:  # trials nest under this run; the test set is not seen
                model = _tuned(model_cfg, {**quiet, **model_cfg.fixed(params)}, data.train)
            else:
                model = create_model(model_name, **{**quiet, **params})
                model.fit(data.train, callbacks=[logger])
            metrics = evaluate(model, data.test, train=data.train, k=config.k)
            if data.test.levels is not None:
                metrics.update(graded_metrics(model, data.test, train=data.train, k=config.k))
            if data.simulation is not None:
                clicks = data.train.item_popularity
                rare = clicks < np.quantile(clicks, 0.8)
                unbiased = candidate_metrics(model, data.simulation.unbiased_test, k=(3, 5),
                                             rare_items=rare)
                metrics.update({f"unbiased_{k}": v for k, v in unbiased.items()})
            mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
            log_model_dir(model, data.train)
        except Exception as exc:  # noqa: BLE001 (any failure is recorded and the rest go on)
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}")
            mlflow.log_text(traceback.format_exc(), "error.txt")
            mlflow.end_run(status="FAILED")
            log.warning("run %s failed: %s", name, exc)
            return {"run": name, "run_id": run.info.run_id, "status": "FAILED",
                    "error": f"{type(exc).__name__}: {exc}"}, None
    return {"run": name, "run_id": run.info.run_id, "status": "FINISHED", **metrics}, logger.history


def _tuned(model_cfg: ModelConfig, fixed: dict, train: Interactions):
    """The variant tuned on a validation split of `train` and refitted on all of it; the study
    is logged in the active run."""
    t = model_cfg.tune
    space, file_fixed = search_space(model_cfg.name, t.space, source="tune.space")
    result = tune(model_cfg.name, train, fixed={**file_fixed, **fixed}, space=space, trials=t.trials,
                  timeout=t.timeout, metric=t.metric, valid_frac=t.valid_frac, folds=t.folds,
                  seed=t.seed, mlflow_runs=True)
    log_study(result, study_summary(result, trials=t.trials, timeout=t.timeout, seed=t.seed,
                                    valid_frac=t.valid_frac, folds=t.folds))
    return result.model


def _winner(report: pd.DataFrame, config: CompareConfig) -> str:
    done = report[report["status"] == "FINISHED"]
    if done.empty:
        return ""
    return str(done.loc[done[config.select].idxmax(), "run"])


def _log_report(report: pd.DataFrame, curves: dict, data: Prepared, config: CompareConfig) -> None:
    shown = ["run", "status", *[c for c in report.columns if "@" in c and not c.startswith("users")]]
    table = report[[c for c in shown if c in report.columns]]
    mlflow.log_text(table.to_csv(index=False), "report/metrics.csv")
    mlflow.log_text(markdown_table(table), "report/metrics.md")
    done = report[report["status"] == "FINISHED"]
    if not done.empty:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(done) + 1.5))
        ax.barh(done["run"], done[config.select])
        ax.set_xlabel(config.select)
        ax.invert_yaxis()
        fig.tight_layout()
        mlflow.log_figure(fig, "report/metric_by_model.png")
        plt.close(fig)
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, history in curves.items():
            epochs = [h["epoch"] for h in history if "valid" in h]
            if epochs:
                ax.plot(epochs, [h["valid"] for h in history if "valid" in h], label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {config.select}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        mlflow.log_figure(fig, "report/learning_curves.png")
        plt.close(fig)
    key = f"avg_popularity@{max(config.k)}"
    if key in done:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(done) + 1.5))
        ax.barh(done["run"], done[key], label="recommended")
        ax.axvline(float(data.train.item_popularity.mean()), color="k", ls="--", label="catalogue mean")
        ax.set_xlabel("average training popularity of recommended items")
        ax.invert_yaxis()
        ax.legend()
        fig.tight_layout()
        mlflow.log_figure(fig, "report/popularity.png")
        plt.close(fig)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-style markdown table; floats with 4 decimals."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
