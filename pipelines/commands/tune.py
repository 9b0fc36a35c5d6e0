"""`recsys tune`: search a model's hyperparameters on validation, refit the best, save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import check_out, positive_float, positive_int
from pipelines.commands.train import add_data_arguments, parse_params, side_files
from recsys.data.files import read_interactions, with_side_files
from recsys.errors import RecsysError
from recsys.models.base import model_names
from recsys.models.persist import check_model_target


def _space_file(path: str):
    import yaml

    file = Path(path)
    if not file.exists():
        raise RecsysError(f"{path}: no such search-space file")
    if file.is_dir():
        raise RecsysError(f"{path}: is a folder, not a search-space file")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecsysError(f"{path}: not a text file (a search space is YAML)") from None
    except yaml.YAMLError as exc:
        raise RecsysError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raise RecsysError(f"{path}: empty search-space file; give lines such as "
                          "'factors: {low: 16, high: 128}'")
    return raw


def cmd_tune(args: argparse.Namespace) -> None:
    from pipelines.tune import check_folds, study_summary, tune, write_study
    from recsys.models.space import search_space

    check_out(args.out, "folder")
    sides = side_files(args)
    check_model_target(args.out)
    fixed = parse_params(args.model, args.param)
    space, file_fixed = search_space(args.model, _space_file(args.space) if args.space else None,
                                     source=args.space or "search space", fixed=fixed)
    fixed = {**file_fixed, **fixed}
    trials = args.trials if args.trials is not None or args.timeout is not None else 20
    if not 0 < args.valid_frac < 1:
        raise RecsysError(f"--valid-frac must be in (0, 1), got {args.valid_frac}")
    check_folds(args.folds)  # before the data is read
    train = with_side_files(read_interactions(args.train, level_names=args.levels), **sides)
    options = dict(fixed=fixed, space=space, trials=trials, timeout=args.timeout, metric=args.metric,
                   valid_frac=args.valid_frac, folds=args.folds, seed=args.seed)

    def summarize(result):
        return study_summary(result, trials=trials, timeout=args.timeout, seed=args.seed,
                             valid_frac=args.valid_frac, folds=args.folds)

    if args.no_mlflow:
        result = tune(args.model, train, **options)
        run_line = ""
    else:
        result, run_id = _tune_in_mlflow(args, train, options, summarize)
        run_line = f"\nMLflow run {run_id} in experiment {args.experiment!r}"
    summary = summarize(result)
    result.model.save(args.out, seen=train)
    write_study(result, args.out, summary)
    states = ", ".join(f"{n} {s.lower()}" for s, n in summary["states"].items())
    tuned = ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items())
    print(f"tuned {args.model}: validation {result.metric} {result.value:.4f} at trial "
          f"{result.best_trial} ({states}); {tuned}\nrefitted on all of {args.train} -> "
          f"{args.out} (study.csv, study.json beside the model){run_line}")


def _tune_in_mlflow(args: argparse.Namespace, train, options: dict, summarize):
    import mlflow

    from pipelines.export import log_model_dir
    from pipelines.tracking import OWNER_TAG, close_orphaned_runs, fingerprint, owner, tracking_uri
    from pipelines.tune import log_study, tune

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(args.experiment)
    close_orphaned_runs(experiment.experiment_id)
    with mlflow.start_run(run_name=f"tune {args.model}", tags={OWNER_TAG: owner()}) as run:
        mlflow.set_tag("dataset_fingerprint", fingerprint(train, str(args.train)))
        mlflow.log_params({"model": args.model, "train": str(args.train), "trials": options["trials"],
                           "timeout": options["timeout"], "seed": args.seed,
                           "valid_frac": args.valid_frac, "folds": args.folds,
                           **{f"fixed.{k}": v for k, v in options["fixed"].items()}})
        result = tune(args.model, train, mlflow_runs=True, **options)
        mlflow.log_param("metric", result.metric)
        log_study(result, summarize(result))
        log_model_dir(result.model, train)
    return result, run.info.run_id


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(sub: argparse._SubParsersAction) -> None:
    tu = sub.add_parser("tune", help="search hyperparameters on validation and save the best model",
                        description="Optuna search (seeded TPE, median pruning of torch models' "
                        "epochs) on a validation split carved from --train; the best parameters "
                        "are refitted on all of --train and saved in --out as a model folder, "
                        "with study.csv and study.json. The study is an MLflow run, each trial "
                        "a nested run.")
    tu.add_argument("--model", required=True, help=f"model name: {', '.join(model_names())}")
    tu.add_argument("--train", required=True, help="training file (user_id,item_id[,rating,...])")
    add_data_arguments(tu)
    tu.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="fix a parameter (not searched), repeatable")
    tu.add_argument("--trials", type=positive_int, help="number of trials (default 20 without --timeout)")
    tu.add_argument("--timeout", type=positive_float,
                    help="seconds to search (stops after the running trial)")
    tu.add_argument("--space", help="YAML file: parameter -> {low, high, log} | {choices} | value, "
                    "over the model's own search space")
    tu.add_argument("--metric", help="validation metric to maximise, e.g. ndcg@20 (default) or "
                    "snips_recall@20 (default for unbiased losses)")
    tu.add_argument("--valid-frac", type=float, default=0.1,
                    help="share of each user's training items held out for validation (default 0.1)")
    tu.add_argument("--folds", type=positive_int, default=1,
                    help="validation splits per trial (1 to 100), its score their mean (default 1; "
                         "more cost as many fits and steady the choice on small data)")
    tu.add_argument("--seed", type=int, default=0, help="seed of the sampler, split and models")
    tu.add_argument("--experiment", default="recsys-tune", help="MLflow experiment (default recsys-tune)")
    tu.add_argument("--no-mlflow", action="store_true", help="do not log the study to MLflow")
    tu.add_argument("--out", required=True, help="model folder to write")
    tu.set_defaults(func=cmd_tune)
