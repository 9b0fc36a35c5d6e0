"""`recsys export`: log a model folder or run as an MLflow pyfunc model and register it."""

from __future__ import annotations

import argparse

from pipelines.commands.common import model_and_data


def cmd_export(args: argparse.Namespace) -> None:
    import mlflow

    from pipelines.export import export_run, log_model_dir
    from pipelines.tracking import tracking_uri, use_experiment

    mlflow.set_tracking_uri(tracking_uri())
    run_id = args.run
    if args.model:
        use_experiment(args.experiment)
        model, train = model_and_data(args)
        with mlflow.start_run(run_name=f"export {args.name}") as run:
            log_model_dir(model, train)
        run_id = run.info.run_id
    version = export_run(run_id, args.name, args.alias)
    print(f"registered {args.name} version {version}"
          + (f" as @{args.alias}: models:/{args.name}@{args.alias}" if args.alias else ""))


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="export a model as an MLflow pyfunc model and register it")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="an MLflow run with a model/ artifact (e.g. from compare)")
    src.add_argument("--model", help="a model folder")
    exp.add_argument("--train", help="training file of --model (default: the one stored with it)")
    exp.add_argument("--name", required=True, help="registered model name")
    exp.add_argument("--alias", default="champion", help="alias to move to the new version")
    exp.add_argument("--experiment", default="recsys", help="experiment of the export run (--model)")
    exp.set_defaults(func=cmd_export)
