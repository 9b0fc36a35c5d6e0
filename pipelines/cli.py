"""The `recsys` command line. Every command exits non-zero with one clear line on bad input."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.datasets import download, registry
from recsys.data.files import read_interactions
from recsys.data.idmap import normalize_ids
from recsys.data.interactions import Interactions
from recsys.data.io import read_events, read_table
from recsys.data.split import split
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import evaluate, parse_ks
from recsys.models.base import create_model, get_model_class, model_names, preset_params, save_seen

log = logging.getLogger("recsys")


# ---- data --------------------------------------------------------------------------------
def cmd_data_prepare(args: argparse.Namespace) -> None:
    frame = read_events(args.input)
    cols = set(frame.columns)
    rating_col = args.rating_col or ("rating" if args.min_rating is not None else None)
    time_col = args.time_col or ("timestamp" if "timestamp" in cols else None)
    level_col = args.level_col or ("level" if "level" in cols else None)
    data = Interactions.from_frame(
        frame, user_col=args.user_col, item_col=args.item_col, rating_col=rating_col,
        time_col=time_col, level_col=level_col, min_rating=args.min_rating,
        duplicates=args.duplicates, source=str(args.input))
    train, test = split(data, args.split, test_frac=args.test_frac, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train.to_frame().to_parquet(out / "train.parquet", index=False)
    test.to_frame().to_parquet(out / "test.parquet", index=False)
    meta = {"input": str(args.input), "split": args.split, "test_frac": args.test_frac,
            "seed": args.seed, "rating_col": rating_col, "min_rating": args.min_rating,
            "duplicates": args.duplicates, "source": data.meta, "test": test.meta,
            "train_pairs": train.nnz, "test_pairs": test.nnz,
            "users": train.n_users, "items": train.n_items}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    print(f"{data.meta['rows']} rows -> {data.nnz} user-item pairs; train {train.nnz} and "
          f"test {test.nnz} pairs over {train.n_users} users and {train.n_items} items; "
          f"test pairs dropped (user/item absent from train): "
          f"{test.meta['test_pairs_dropped_cold_user']}/{test.meta['test_pairs_dropped_cold_item']}"
          f" -> {out}")


def cmd_data_download(args: argparse.Namespace) -> None:
    path = download(args.name, cache_dir=args.dir)
    info = registry()[args.name]
    print(f"{args.name}: {path}\nlicence: {info['licence']}")


def cmd_data_list(args: argparse.Namespace) -> None:
    for name, info in sorted(registry().items()):
        print(f"{name:8s} {info['description']}")


# ---- models ------------------------------------------------------------------------------
def parse_params(model: str, pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings to typed constructor arguments, typed by each default."""
    defaults = get_model_class(model).param_defaults()
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise RecsysError(f"--param {pair!r}: expected key=value")
        if key not in defaults:
            raise RecsysError(f"model {model!r} has no parameter {key!r}; "
                              f"parameters: {', '.join(sorted(defaults))}")
        params[key] = _convert(key, raw, defaults[key])
    return params


def _convert(key: str, raw: str, default: Any) -> Any:
    if default is None:  # optional parameter: a number, none, or text
        if raw.lower() in ("none", "null"):
            return None
        for kind in (int, float):
            try:
                return kind(raw)
            except ValueError:
                pass
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise RecsysError(f"--param {key}={raw!r}: expected a {type(default).__name__}") from None
    return raw


def cmd_train(args: argparse.Namespace) -> None:
    for flag in ("item_features", "user_features", "item_text"):
        if getattr(args, flag):
            raise RecsysError(f"--{flag.replace('_', '-')}: model {args.model!r} uses no side "
                              "information")
    model = create_model(args.model, **parse_params(args.model, args.param))
    train = read_interactions(args.train)
    valid = None
    if args.valid:
        valid = read_interactions(args.valid, user_map=train.user_map, item_map=train.item_map)
        if valid.nnz == 0:
            raise RecsysError(f"{args.valid}: no pair has a user and item seen in {args.train}")
    model.fit(train, valid=valid)
    model.save(args.out)
    save_seen(args.out, train)
    info = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in model.fit_info_.items())
    print(f"trained {args.model} ({info}) -> {args.out}")


def _model_and_data(args: argparse.Namespace):
    """The model named by --model and the items to exclude: --train, else the stored ones."""
    from pipelines.export import open_model

    model, seen, _ = open_model(args.model)
    if args.train:
        seen = read_interactions(args.train, user_map=model.user_map_, item_map=model.item_map_)
    elif seen is None:
        raise RecsysError(f"{args.model} stores no training items: pass --train FILE")
    return model, seen


def cmd_evaluate(args: argparse.Namespace) -> None:
    ks = parse_ks(args.k)
    model, train = _model_and_data(args)
    test = read_interactions(args.test, user_map=model.user_map_, item_map=model.item_map_)
    if test.nnz == 0:
        raise RecsysError(f"{args.test}: none of its users and items are known to the model "
                          f"({test.meta.get('dropped_unknown_users', 0)} unknown users)")
    metrics = evaluate(model, test, train=train, k=ks, progress=True)
    report = {"metrics": metrics,
              "test_rows_dropped_unknown_user": test.meta.get("dropped_unknown_user_rows", 0),
              "test_rows_dropped_unknown_item": test.meta.get("dropped_unknown_item_rows", 0)}
    for key, value in metrics.items():
        print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
    dropped = report["test_rows_dropped_unknown_user"] + report["test_rows_dropped_unknown_item"]
    if dropped:
        print(f"note: {dropped} test rows with users/items unknown to the model were not scored")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def cmd_recommend(args: argparse.Namespace) -> None:
    from pipelines.batch import recommend_to_parquet

    k = parse_ks(args.k)
    if len(k) != 1:
        raise RecsysError(f"--k takes one value for recommend, got {args.k}")
    if args.spark:
        _recommend_spark(args, k[0])
        return
    model, train = _model_and_data(args)
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


def cmd_compare(args: argparse.Namespace) -> None:
    from pipelines.compare import compare, markdown_table
    from pipelines.config import load_config
    from pipelines.tracking import tracking_uri

    config = load_config(args.config)
    report = compare(config)
    cols = ["run", "status", *[c for c in (config.select, f"recall@{max(config.k)}",
                                            "unbiased_dcg@5", "unbiased_rare_dcg@5") if c in report]]
    print(markdown_table(report[cols]))
    if "registered_version" in report.attrs:
        print(f"registered {config.register_as} version {report.attrs['registered_version']} "
              f"as @{config.alias}: models:/{config.register_as}@{config.alias}")
    uri = tracking_uri()
    print(f"parent run {report.attrs['parent_run_id']} in experiment {config.experiment!r}")
    if uri.startswith("sqlite:"):
        print(f"look at it with: mlflow ui --backend-store-uri {uri}")
    else:
        print(f"tracking server: {uri}")


def cmd_export(args: argparse.Namespace) -> None:
    import mlflow

    from pipelines.export import export_run, log_model_dir
    from pipelines.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    run_id = args.run
    if args.model:
        mlflow.set_experiment(args.experiment)
        model, train = _model_and_data(args)
        with mlflow.start_run(run_name=f"export {args.name}") as run:
            log_model_dir(model, train)
        run_id = run.info.run_id
    version = export_run(run_id, args.name, args.alias)
    print(f"registered {args.name} version {version}"
          + (f" as @{args.alias}: models:/{args.name}@{args.alias}" if args.alias else ""))


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from serving.app import create_app
        from serving.loader import load_engine
        from serving.observe import configure_access_log
        from serving.settings import ENV_PREFIX, Settings
    except ImportError as exc:
        raise RecsysError(f"serving needs the [serve] extra ({exc.name} is missing): "
                          "pip install 'recsys[serve]'") from None
    settings = Settings.from_env(model=args.model, train=args.train,
                                 item_attributes=args.item_attributes, max_k=args.max_k,
                                 access_log=args.access_log)
    configure_access_log(settings.access_log)
    server = dict(host=args.host, port=args.port, timeout_graceful_shutdown=args.graceful_timeout,
                  access_log=False, log_level="info")
    if args.workers > 1:  # each worker process loads the model itself, from the environment
        for name, value in settings.model_dump(exclude_none=True).items():
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            os.environ[ENV_PREFIX + name.upper()] = str(raw)
        uvicorn.run("serving.app:create_app_from_env", factory=True, workers=args.workers, **server)
        return
    engine = load_engine(settings)  # before binding the port: a bad model fails fast
    print(f"serving {engine.model_name} {engine.version} from {engine.source} on "
          f"http://{args.host}:{args.port} (API docs at /docs)", flush=True)
    uvicorn.run(create_app(settings, engine), **server)


def cmd_models(args: argparse.Namespace) -> None:
    for name in model_names():
        params = {**get_model_class(name).param_defaults(), **preset_params(name)}
        print(f"{name}: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "(no parameters)"))


# ---- parser ------------------------------------------------------------------------------
def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or models:/NAME@ALIAS")
    parser.add_argument("--train", help="training file (its items are excluded; default: the "
                        "ones stored with the model)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description="Recommendation from implicit feedback.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare and download data").add_subparsers(
        dest="data_command", required=True)
    prep = data.add_parser("prepare", help="event log -> train/test Parquet files",
                           description="Read an event log (CSV/Parquet, MovieLens u.data/"
                           "ratings.dat/ratings.csv or a RecBole .inter file) and split it.")
    prep.add_argument("--input", required=True, help="event file or MovieLens folder")
    prep.add_argument("--user-col", default="user_id", help="user id column (default user_id)")
    prep.add_argument("--item-col", default="item_id", help="item id column (default item_id)")
    prep.add_argument("--rating-col", help="rating column: the pair's weight, or filtered by "
                      "--min-rating (default: rating when --min-rating is given)")
    prep.add_argument("--min-rating", type=float, help="keep rows rated >= X, as weight-1 positives")
    prep.add_argument("--time-col", help="timestamp column (default: timestamp if present)")
    prep.add_argument("--level-col", help="graded feedback level 1..L (default: level if present)")
    prep.add_argument("--duplicates", choices=["sum", "max"], default="sum",
                      help="combine repeated (user, item) rows by summing weights (default) or max")
    prep.add_argument("--split", choices=["random", "temporal", "leave-last"], default="random",
                      help="per-user random holdout (default), global temporal cut, or each "
                      "user's last item")
    prep.add_argument("--test-frac", type=float, default=0.2, help="test share (default 0.2)")
    prep.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    prep.add_argument("--out", required=True, help="output folder for train/test.parquet, meta.json")
    prep.set_defaults(func=cmd_data_prepare)

    dl = data.add_parser("download", help="download a public data set (verified, cached)")
    dl.add_argument("name", help="data set name, see `recsys data list`")
    dl.add_argument("--dir", help="cache folder (default $RECSYS_DATA_HOME or ~/.cache/recsys)")
    dl.set_defaults(func=cmd_data_download)
    data.add_parser("list", help="list known data sets").set_defaults(func=cmd_data_list)

    tr = sub.add_parser("train", help="train a model and save it to a folder")
    tr.add_argument("--model", required=True, help=f"model name: {', '.join(model_names())}")
    tr.add_argument("--train", required=True, help="training file (user_id,item_id[,rating,...])")
    tr.add_argument("--valid", help="validation file for early stopping (default: carved from train)")
    tr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="model parameter, repeatable (see `recsys models`)")
    tr.add_argument("--out", required=True, help="model folder to write")
    tr.add_argument("--item-features", help="item_id + feature columns ('|' separates values), "
                    "for models that use side information")
    tr.add_argument("--user-features", help="user_id + feature columns, for models that use them")
    tr.add_argument("--item-text", help="item_id,text file, for models that use item text")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="full-ranking metrics of a model on a test file")
    _model_arguments(ev)
    ev.add_argument("--test", required=True, help="test file")
    ev.add_argument("--k", default="10,20", help="cut-offs, comma-separated (default 10,20)")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_evaluate)

    rec = sub.add_parser("recommend", help="batch top-K recommendations to Parquet")
    _model_arguments(rec)
    rec.add_argument("--users", help="file with a user_id column (default: all known users)")
    rec.add_argument("--k", default="20", help="items per user (default 20; up to the catalogue)")
    rec.add_argument("--out", required=True, help="output Parquet: user_id,item_id,score,rank")
    rec.add_argument("--chunk-users", type=int, help="users scored per chunk (default: by memory)")
    rec.add_argument("--spark", action="store_true",
                     help="score on a local Spark session through mlflow.pyfunc.spark_udf "
                     "(needs the [spark] extra and a models:/ URI; --out becomes a Parquet folder; "
                     "unknown users get popular items flagged in a fallback column)")
    rec.set_defaults(func=cmd_recommend)

    cmp = sub.add_parser("compare", help="train and compare models as MLflow runs")
    cmp.add_argument("--config", required=True, help="YAML config, e.g. pipelines/configs/quickstart.yaml")
    cmp.set_defaults(func=cmd_compare)

    exp = sub.add_parser("export", help="export a model as an MLflow pyfunc model and register it")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="an MLflow run with a model/ artifact (e.g. from compare)")
    src.add_argument("--model", help="a model folder")
    exp.add_argument("--train", help="training file of --model (default: the one stored with it)")
    exp.add_argument("--name", required=True, help="registered model name")
    exp.add_argument("--alias", default="champion", help="alias to move to the new version")
    exp.add_argument("--experiment", default="recsys", help="experiment of the export run (--model)")
    exp.set_defaults(func=cmd_export)

    sub.add_parser("models", help="list models and their parameters").set_defaults(func=cmd_models)

    srv = sub.add_parser("serve", help="serve recommendations over HTTP (needs the [serve] extra)",
                         description="Online scoring endpoint. Settings may also come from "
                         "RECSYS_SERVE_* variables; the /admin/reload token only does "
                         "(RECSYS_SERVE_ADMIN_TOKEN), so it never shows in a process list.")
    srv.add_argument("--model", help="model folder, models:/NAME@ALIAS or models:/NAME/VERSION "
                     "(default: RECSYS_SERVE_MODEL)")
    srv.add_argument("--train", help="training file whose items are excluded (default: the "
                     "ones stored with the model)")
    srv.add_argument("--item-attributes", help="CSV/Parquet: item_id + categorical columns that "
                     "requests may filter on ('|' separates several values)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--max-k", type=int, help="largest k a request may ask for (default 1000)")
    srv.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    srv.add_argument("--graceful-timeout", type=float, default=10.0,
                     help="seconds to let in-flight requests finish on shutdown (default 10)")
    srv.add_argument("--no-access-log", dest="access_log", action="store_const", const=False,
                     help="do not print a JSON line per request")
    srv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="recsys: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RecsysError as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
