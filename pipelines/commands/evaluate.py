"""`recsys evaluate`: full-ranking metrics of a trained model on a test file."""

from __future__ import annotations

import argparse
import json

from pipelines.commands.common import check_out, model_and_data, model_arguments
from recsys.atomic import write_text
from recsys.data.files import read_interactions
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import evaluate
from recsys.evaluate.graded import graded_metrics
from recsys.ranking import parse_ks


def cmd_evaluate(args: argparse.Namespace) -> None:
    ks = parse_ks(args.k)
    if args.json:
        check_out(args.json, "file", "--json")
    model, train = model_and_data(args)
    test = read_interactions(args.test, user_map=model.user_map_, item_map=model.item_map_,
                             level_names=args.levels)
    if test.nnz == 0:
        raise RecsysError(f"{args.test}: none of its users and items are known to the model "
                          f"({test.meta.get('dropped_unknown_users', 0)} unknown users)")
    metrics = evaluate(model, test, train=train, k=ks, progress=True)
    if test.levels is not None:
        metrics.update(graded_metrics(model, test, train=train, k=ks))
    report = {"metrics": metrics,
              "test_rows_dropped_unknown_user": test.meta.get("dropped_unknown_user_rows", 0),
              "test_rows_dropped_unknown_item": test.meta.get("dropped_unknown_item_rows", 0)}
    for key, value in metrics.items():
        print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
    dropped = report["test_rows_dropped_unknown_user"] + report["test_rows_dropped_unknown_item"]
    if dropped:
        print(f"note: {dropped} test rows with users/items unknown to the model were not scored")
    if metrics["test_pairs_in_train"]:
        print(f"note: {metrics['test_pairs_in_train']} test pairs are also training pairs (never "
              "recommended, so never a hit) and were not scored")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="full-ranking metrics of a model on a test file")
    model_arguments(ev)
    ev.add_argument("--test", required=True, help="test file")
    ev.add_argument("--k", default="10,20", help="cut-offs, comma-separated (default 10,20)")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.add_argument("--levels", help="level names weakest first, for a test file whose 'level' "
                    "column holds names (with levels, per-level and graded metrics are added)")
    ev.set_defaults(func=cmd_evaluate)
