"""Tuned against default parameters on MovieLens-100K (every rating an interaction, per-user
random 80/20 split), parameters chosen on a validation split of the training part only.

    python bench/tuning.py --movielens ../shared/data/ml-100k [--models als,ease,bpr,mf]
                           [--trials 30] [--seed 0] [--device cpu|cuda] [--csv OUT]

For each model: test NDCG@20 and Recall@20 with the defaults and after `pipelines.tune.tune`
(the same study `recsys tune --trials N` runs: seeded TPE, median pruning, the best refitted
on the whole training part), the best validation score, the tuned parameters and the time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from pipelines.tune import tune
from recsys import Interactions, create_model
from recsys.data import random_split, read_events
from recsys.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", type=Path, required=True, help="MovieLens-100K folder or .inter file")
    ap.add_argument("--models", default="als,ease,bpr,mf")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="torch device of the torch models (and ease)")
    ap.add_argument("--csv", help="also write the rows here")
    args = ap.parse_args()
    path = args.movielens
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.inter")) or [path / "u.data"]))
    train, test = random_split(Interactions.from_frame(read_events(path)), test_frac=0.2, seed=args.seed)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__} on {device}; {train} / test {test.nnz} pairs")
    rows = []
    for name in args.models.split(","):
        quiet = {k: v for k, v in {"progress": False, "device": args.device}.items()
                 if k in create_model(name).param_defaults()}
        start = time.perf_counter()
        default = create_model(name, **quiet).fit(train)
        default_s = time.perf_counter() - start
        start = time.perf_counter()
        result = tune(name, train, fixed=quiet, trials=args.trials, seed=args.seed, progress=True)
        tuned_s = time.perf_counter() - start
        before = evaluate(default, test, train=train, k=20)
        after = evaluate(result.model, test, train=train, k=20)
        states = result.trials["state"].value_counts().to_dict()
        rows.append({"model": name, "default ndcg@20": before["ndcg@20"], "tuned ndcg@20": after["ndcg@20"],
                     "default recall@20": before["recall@20"], "tuned recall@20": after["recall@20"],
                     "valid ndcg@20": result.value, "trials": args.trials,
                     "pruned": states.get("PRUNED", 0), "default fit s": default_s, "tune s": tuned_s,
                     "tuned params": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in result.best_params.items())})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print("| " + " | ".join(frame.columns) + " |")
    print("|" + "---|" * len(frame.columns))
    for row in frame.to_dict("records"):
        print("| " + " | ".join(f"{v:.1f}" if key.endswith(" s") else f"{v:.4f}" if isinstance(v, float)
                                else str(v) for key, v in row.items()) + " |")


if __name__ == "__main__":
    main()
