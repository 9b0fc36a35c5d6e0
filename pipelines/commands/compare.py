"""`recsys compare`: train and compare the models of a YAML config as MLflow runs."""

from __future__ import annotations

import argparse

from recsys.errors import RecsysError


def cmd_compare(args: argparse.Namespace) -> None:
    from pipelines.compare import compare, markdown_table
    from pipelines.config import load_config
    from pipelines.tracking import runs_url, tracking_uri

    config = load_config(args.config)
    report = compare(config)
    cols = ["run", "status", *[c for c in (config.select, f"recall@{max(config.k)}",
                                            "unbiased_dcg@5", "unbiased_rare_dcg@5") if c in report]]
    print(markdown_table(report[cols]))
    for line in report.attrs.get("warnings", []):
        print(f"warning: {line}")
    failed = report[report["status"] == "FAILED"]
    if len(failed) == len(report):
        first = failed.iloc[0]
        raise RecsysError(f"all {len(report)} runs failed; {first['run']}: {first['error']}")
    if "registered_version" in report.attrs:
        print(f"registered {config.register_as} version {report.attrs['registered_version']} "
              f"as @{config.alias}: models:/{config.register_as}@{config.alias}")
    uri = tracking_uri()
    experiment_id = report.attrs["experiment_id"]
    print(f"parent run {report.attrs['parent_run_id']} in experiment {config.experiment!r}")
    if uri.startswith("sqlite:"):
        print(f"look at it with: mlflow ui --backend-store-uri {uri}\n"
              f"then open {runs_url(experiment_id)}")
    else:
        print(f"tracking server: {uri}, runs at {runs_url(experiment_id, uri.rstrip('/'))}")


def register(sub: argparse._SubParsersAction) -> None:
    cmp = sub.add_parser("compare", help="train and compare models as MLflow runs")
    cmp.add_argument("--config", required=True, help="YAML config, e.g. pipelines/configs/quickstart.yaml")
    cmp.set_defaults(func=cmd_compare)
