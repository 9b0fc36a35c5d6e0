"""`recsys train --nproc N` with validation and early stopping against one process.

    python bench/ddp_valid.py [--movielens ../shared/data/ml-100k] [--device cuda]
        [--nproc 1,2] [--models mf,lightgcn] [--param KEY=VALUE ...] [--out FILE.json]

MovieLens-100K (every rating an interaction) split per user 80/20 at random (seed 0) and
written as CSV files; each model is trained by the real command line, `python -m pipelines.cli
train --model M --train train.csv --out FOLDER --nproc N --param device=DEVICE`, with its
defaults: validation carved from the training file, early stopping, refit. For each run:
wall seconds of the command, the chosen epoch, epochs run and best validation score from the
saved config.json, whether the output folder loads (`load_model`) and its test NDCG@20, and
whether the output's parent holds that one folder and nothing else (only rank 0 saves, no
leftover temporary folders). The rows of one model must choose the same epoch (the ranks
train the same model up to the order of gradient reductions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from recsys import Interactions, load_model
from recsys.data import random_split, read_events
from recsys.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent


def write_split(movielens: str, folder: Path) -> tuple[Interactions, Interactions]:
    path = Path(movielens)
    path = path / "ml-100k.inter" if path.is_dir() else path
    train, test = random_split(Interactions.from_frame(read_events(path)), test_frac=0.2, seed=0)
    for name, data in (("train", train), ("test", test)):
        users, items = data.coo
        pd.DataFrame({"user_id": data.user_map.to_ids(users),
                      "item_id": data.item_map.to_ids(items)}).to_csv(folder / f"{name}.csv",
                                                                      index=False)
    return train, test


def train_run(model: str, nproc: int, args, work: Path, test: Interactions, train: Interactions
              ) -> dict:
    parent = work / f"{model}-{nproc}"
    parent.mkdir()
    out = parent / "model"
    params = [x for p in [f"device={args.device}", "progress=false", *args.param]
              for x in ("--param", p)]
    cmd = [sys.executable, "-m", "pipelines.cli", "train", "--model", model, "--train",
           str(work / "train.csv"), "--out", str(out), "--nproc", str(nproc), *params]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    row = {"model": model, "nproc": nproc, "rc": done.returncode, "seconds": seconds}
    if done.returncode:
        row["error"] = done.stderr[-2000:]
        return row
    info = json.loads((out / "config.json").read_text())["fit_info"]
    loaded = load_model(out)
    row.update({k: info.get(k) for k in ("best_epoch", "epochs_run", "best_valid", "processes")})
    row["ndcg@20"] = evaluate(loaded, test, train=train, k=20)["ndcg@20"]
    row["one_folder"] = sorted(p.name for p in parent.iterdir()) == ["model"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="../shared/data/ml-100k")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nproc", default="1,2")
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", help="also write the rows here (JSON)")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, test = write_split(args.movielens, work)
        for model in args.models.split(","):
            for nproc in map(int, args.nproc.split(",")):
                rows.append(train_run(model, nproc, args, work, test, train))
                print(json.dumps(rows[-1]), flush=True)
    columns = ["model", "nproc", "rc", "seconds", "best_epoch", "epochs_run", "best_valid",
               "ndcg@20", "one_folder"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row.get(c):.4f}" if isinstance(row.get(c), float)
                                else str(row.get(c)) for c in columns) + " |")
    same = {m: len({r.get("best_epoch") for r in rows if r["model"] == m}) == 1
            for m in args.models.split(",")}
    print("same chosen epoch:", same)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
