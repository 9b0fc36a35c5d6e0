"""`recsys recommend`: batch top-K recommendations to Parquet, locally or on Spark."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pipelines.commands.common import check_out, model_and_data, model_arguments, positive_int
from recsys.data.idmap import normalize_ids
from recsys.data.io import read_table
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import parse_ks


def cmd_recommend(args: argparse.Namespace) -> None:
    from pipelines.batch import recommend_to_parquet

    k = parse_ks(args.k)
    if len(k) != 1:
        raise RecsysError(f"--k takes one value for recommend, got {args.k}")
    check_out(args.out, "folder" if args.spark else "file")
    if args.spark:
        _recommend_spark(args, k[0])
        return
    model, train = model_and_data(args)
    if args.users:
        frame = read_table(args.users, ["user_id"])
        idx = model.user_map_.index_of(frame["user_id"])
        unknown = int((idx < 0).sum())
        if unknown:
            print(f"note: {unknown} of {len(idx)} users in {args.users} are unknown to the model "
                  "and get no recommendations", file=sys.stderr)
        users = np.unique(idx[idx >= 0])
        if len(users) == 0:
            raise RecsysError(f"{args.users}: none of its users are known to the model")
    else:
        users = np.arange(len(model.user_map_))
    rows = recommend_to_parquet(model, users, k[0], args.out, exclude=train,
                                chunk_users=args.chunk_users)
    print(f"{rows} recommendations for {len(users)} users -> {args.out}")


def _recommend_spark(args: argparse.Namespace, k: int) -> None:
    from pipelines.export import open_model
    from pipelines.spark_batch import recommend_spark_to_parquet

    if not args.model.startswith("models:/"):
        raise RecsysError(f"--spark scores an exported pyfunc model: pass models:/NAME@ALIAS, "
                          f"not {args.model!r} (recsys export registers a model folder)")
    if args.train:
        raise RecsysError("--spark excludes the training items stored in the exported model; "
                          "drop --train")
    if args.users:
        users = normalize_ids(read_table(args.users, ["user_id"])["user_id"])
    else:
        users = open_model(args.model)[0].user_map_.ids
    rows = recommend_spark_to_parquet(args.model, users.tolist(), k, args.out)
    print(f"{rows} recommendations for {len(users)} users -> {args.out} (Parquet folder)")


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recommend", help="batch top-K recommendations to Parquet")
    model_arguments(rec)
    rec.add_argument("--users", help="file with a user_id column (default: all known users)")
    rec.add_argument("--k", default="20", help="items per user (default 20; up to the catalogue)")
    rec.add_argument("--out", required=True, help="output Parquet: user_id,item_id,score,rank")
    rec.add_argument("--chunk-users", type=positive_int,
                     help="users scored per chunk (default: by memory)")
    rec.add_argument("--spark", action="store_true",
                     help="score on a local Spark session through mlflow.pyfunc.spark_udf "
                     "(needs the [spark] extra and a models:/ URI; --out becomes a Parquet folder; "
                     "unknown users get popular items flagged in a fallback column)")
    rec.set_defaults(func=cmd_recommend)
