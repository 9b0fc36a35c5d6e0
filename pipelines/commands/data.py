"""`recsys data prepare | download | list`: event logs to train/test files, public data sets."""

from __future__ import annotations

import argparse
import json

from pipelines.commands.common import check_out, finite_float, fraction, non_negative_int
from recsys.atomic import atomic_file
from recsys.data.datasets import download, registry
from recsys.data.interactions import Interactions
from recsys.data.io import read_events
from recsys.data.levels import level_counts
from recsys.data.split import split


def cmd_data_prepare(args: argparse.Namespace) -> None:
    out = check_out(args.out, "folder")
    frame = read_events(args.input)
    cols = set(frame.columns)
    by_rating = args.levels_from_rating is not None
    rating_col = args.rating_col or (
        "rating" if args.min_rating is not None or by_rating else None)
    time_col = args.time_col or ("timestamp" if "timestamp" in cols else None)
    level_col = args.level_col or ("level" if "level" in cols and not by_rating else None)
    data = Interactions.from_frame(
        frame, user_col=args.user_col, item_col=args.item_col, rating_col=rating_col,
        time_col=time_col, level_col=level_col, level_names=args.levels,
        levels_from_rating=args.levels_from_rating, min_rating=args.min_rating,
        duplicates=args.duplicates, source=str(args.input))
    train, test = split(data, args.split, test_frac=args.test_frac, seed=args.seed)
    meta = {"input": str(args.input), "split": args.split, "test_frac": args.test_frac,
            "test_frac_reached": test.meta["test_frac_reached"],
            "seed": args.seed, "rating_col": rating_col, "min_rating": args.min_rating,
            "duplicates": args.duplicates, "source": data.meta, "test": test.meta,
            "train_pairs": train.nnz, "test_pairs": test.nnz,
            "users": train.n_users, "items": train.n_items}
    if data.level_names is not None:
        meta["levels"] = {"names": list(data.level_names),
                          **{part: level_counts(d.levels, d.level_names)
                             for part, d in (("all", data), ("train", train), ("test", test))}}
    # all three files are written in full first, then renamed into place together
    with (atomic_file(out / "train.parquet") as train_tmp, atomic_file(out / "test.parquet") as
          test_tmp, atomic_file(out / "meta.json") as meta_tmp):
        train.to_frame().to_parquet(train_tmp, index=False)
        test.to_frame().to_parquet(test_tmp, index=False)
        meta_tmp.write_text(json.dumps(meta, indent=2, default=str))
    print(f"{data.meta['rows']} rows -> {data.nnz} user-item pairs; train {train.nnz} and "
          f"test {test.nnz} pairs (test share reached {meta['test_frac_reached']:.4g}) over "
          f"{train.n_users} users and {train.n_items} items; "
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


def register(sub: argparse._SubParsersAction) -> None:
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
    prep.add_argument("--min-rating", type=finite_float, help="keep rows rated >= X, as weight-1 positives")
    prep.add_argument("--time-col", help="timestamp column (default: timestamp if present)")
    prep.add_argument("--level-col", help="graded feedback: integer levels 1..L, or event names "
                      "ordered by --levels (default: level if present); the highest level per "
                      "(user, item) is kept")
    prep.add_argument("--levels", help="level names weakest first, e.g. 'view<cart<purchase': "
                      "the values of --level-col, or names for its integers 1..L")
    prep.add_argument("--levels-from-rating", metavar="T1,T2,...",
                      help="levels from rating thresholds, e.g. 3,4,5: 3 -> level 1, 4 -> 2, "
                      ">= 5 -> 3; rows rated below the first are dropped and counted")
    prep.add_argument("--duplicates", choices=["sum", "max"], default="sum",
                      help="combine repeated (user, item) rows by summing weights (default) or max")
    prep.add_argument("--split", choices=["random", "temporal", "leave-last"], default="random",
                      help="per-user random holdout (default), global temporal cut, or each "
                      "user's last item")
    prep.add_argument("--test-frac", type=fraction, default=0.2,
                      help="test share in (0, 1) (default 0.2; leave-last takes one pair per user)")
    prep.add_argument("--seed", type=non_negative_int, default=0, help="random seed >= 0 (default 0)")
    prep.add_argument("--out", required=True, help="output folder for train/test.parquet, meta.json")
    prep.set_defaults(func=cmd_data_prepare)

    dl = data.add_parser("download", help="download a public data set (verified, cached)")
    dl.add_argument("name", help="data set name, see `recsys data list`")
    dl.add_argument("--dir", help="cache folder (default $RECSYS_DATA_HOME or ~/.cache/recsys)")
    dl.set_defaults(func=cmd_data_download)
    data.add_parser("list", help="list known data sets").set_defaults(func=cmd_data_list)
