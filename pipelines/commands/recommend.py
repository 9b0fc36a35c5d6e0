"""`recsys recommend`: batch top-K recommendations to Parquet, locally or on Spark."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from pipelines.commands.common import check_out, model_and_data, model_arguments, positive_int
from recsys.data.io import read_table
from recsys.errors import RecsysError
from recsys.ranking import parse_ks


def cmd_recommend(args: argparse.Namespace) -> None:
    k = parse_ks(args.k)
    if len(k) != 1:
        raise RecsysError(f"--k takes one value for recommend, got {args.k}")
    check_out(args.out, "folder" if args.spark else "file")
    if args.spark:
        _recommend_spark(args, k[0])
        return
    from pipelines.batch import align_rows, recommend_to_parquet
    from recsys.inference import Ranker

    model, train = model_and_data(args)
    ranker = Ranker(_graded(model, args.grade), train)
    feature_ids, features = _user_features(args, ranker)
    user_ids, history_ids, history = _users_and_history(args, model, feature_ids)
    counts = recommend_to_parquet(ranker, user_ids, k[0], args.out,
                                  history=None if history is None else align_rows(
                                      history, history_ids, user_ids),
                                  features=None if features is None else features.reindex(
                                      user_ids).reset_index(drop=True),
                                  chunk_users=args.chunk_users)
    print(f"{counts['rows']} recommendations for {len(user_ids)} users -> {args.out}")
    _notes(counts)


def _graded(model, grade: str | None):
    """The model ranking by --grade (a level name or 1-based number), checked before any work."""
    from recsys.inference import at_grade

    try:
        return at_grade(model, grade)
    except RecsysError as exc:
        raise RecsysError(f"--grade {grade}: {exc}") from None


def _user_features(args: argparse.Namespace, ranker) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The --user-features users (in the model's id type) and their raw feature columns
    indexed by user id, checked against the model's user features before any work."""
    from pipelines.batch import user_ids_like
    from recsys.data.request_features import check_frame

    model = ranker.model
    if not args.user_features:
        return np.zeros(0, model.user_map_.ids.dtype), None
    frame = read_table(args.user_features, ["user_id"])
    table = ranker.user_features
    ids = user_ids_like(frame["user_id"], model.user_map_.is_integer, args.user_features)
    check_frame(table, frame.assign(user_id=ids), args.user_features, id_col="user_id")
    return ids, frame.drop(columns="user_id").set_axis(pd.Index(ids, dtype=object))


def _users_and_history(args: argparse.Namespace, model, feature_ids=()):
    """The users to answer (the --users file, else every known user and every user of the
    --history and --user-features files) in the model's id type, and the --history users and
    their items (or None)."""
    from pipelines.batch import read_history, user_ids_like

    history_ids, history = np.zeros(0, model.user_map_.ids.dtype), None
    if args.history:
        history_ids, history, unknown = read_history(args.history, model.user_map_, model.item_map_)
        if unknown:
            print(f"note: {unknown} rows of {args.history} name items unknown to the model and "
                  "were left out")
    if args.users:
        ids = user_ids_like(read_table(args.users, ["user_id"])["user_id"], model.user_map_.is_integer,
                            args.users)
        return pd.unique(ids), history_ids, history
    others = pd.unique(np.concatenate([history_ids, np.asarray(feature_ids, history_ids.dtype)]))
    new = others[model.user_map_.index_of(others) < 0]
    return np.concatenate([model.user_map_.ids, new]), history_ids, history


def _notes(counts: dict[str, int]) -> None:
    if counts["folded_in"]:
        print(f"note: {counts['folded_in']} users unknown to the model were answered from their "
              "history or features (folded_in column)")
    if counts["fallback"]:
        print(f"note: {counts['fallback']} users unknown to the model got the most popular items "
              "(fallback column)")


def _recommend_spark(args: argparse.Namespace, k: int) -> None:
    from pipelines.batch import align_rows, history_lists
    from pipelines.spark_batch import recommend_spark_to_parquet
    from recsys.store import open_model

    if not args.model.startswith("models:/"):
        raise RecsysError(f"--spark scores an exported pyfunc model: pass models:/NAME@ALIAS, "
                          f"not {args.model!r} (recsys export registers a model folder)")
    if args.train:
        raise RecsysError("--spark excludes the training items stored in the exported model; "
                          "drop --train")
    if args.user_features:
        raise RecsysError("--spark does not read --user-features; score them without --spark")
    model = open_model(args.model)[0]
    _graded(model, args.grade)
    user_ids, history_ids, history = _users_and_history(args, model)
    histories = None
    if history is not None:  # item id lists, read by the exported model as they are locally
        histories = history_lists(align_rows(history, history_ids, user_ids), model.item_map_)
    rows = recommend_spark_to_parquet(args.model, user_ids.tolist(), k, args.out,
                                      histories=histories, grade=args.grade)
    print(f"{rows} recommendations for {len(user_ids)} users -> {args.out} (Parquet folder)")


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recommend", help="batch top-K recommendations to Parquet")
    model_arguments(rec)
    rec.add_argument("--users", help="file with a user_id column (default: all known users and "
                     "the users of --history and --user-features)")
    rec.add_argument("--history", help="file with user_id,item_id rows: users the model does not "
                     "know are answered from these items (folded in) when the model can")
    rec.add_argument("--user-features", help="file with user_id and user feature columns (as "
                     "for training): users the model does not know are answered from them when "
                     "the model encodes new users from features")
    rec.add_argument("--grade", help="rank by this level of graded feedback (a level name, e.g. "
                     "purchase, or its 1-based number) instead of the model's default; models "
                     "trained on levels (gnolr)")
    rec.add_argument("--k", default="20", help="items per user (default 20; up to the catalogue)")
    rec.add_argument("--out", required=True, help="output Parquet: user_id, item_id, score, rank, "
                     "fallback, folded_in")
    rec.add_argument("--chunk-users", type=positive_int,
                     help="users scored per chunk (default: by memory)")
    rec.add_argument("--spark", action="store_true",
                     help="score on a local Spark session through mlflow.pyfunc.spark_udf "
                     "(needs the [spark] extra and a models:/ URI; --out becomes a Parquet folder "
                     "with the same rows as without --spark)")
    rec.set_defaults(func=cmd_recommend)
