"""Graph collaborative filtering: mf vs lightgcn vs sgl vs simgcl vs xsimgcl, with defaults.

    python bench/graph.py [--movielens ../shared/data/ml-100k] [--sets ml-100k,power-law]
                          [--models mf,lightgcn,sgl,simgcl,xsimgcl] [--seeds 0,1,2]
                          [--users 60000 --items 20000 --interactions 1000000]
                          [--model "LABEL=NAME:key=value,..." ...] [--device cpu|cuda]
                          [--threads N] [--jobs N] [--csv FILE] [--summarize CSV ...]

Each data set is split once per user, 80/20 at random (seed 0; MovieLens-100K: every rating
is an interaction); each model is trained with its defaults (its own validation carve-out,
early stopping and refit) under each seed. Reported: NDCG@20 and Recall@20 over all test
items and over tail items (outside the 20% most popular in train), mean ± standard deviation
over seeds; seconds per training epoch, the selected epoch, seconds of training up to it,
and the whole fit's wall time (selection, validation and refit) and process CPU time (on a
shared machine, CPU time with `--threads 1` is the better measure of the work done).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cells import parse_model, run_cells

from recsys import Interactions, create_model
from recsys.data import random_split, read_events
from recsys.data.synthetic import synthetic_log
from recsys.evaluate import evaluate

METRICS = ["ndcg@20", "recall@20", "tail_ndcg@20", "tail_recall@20"]
TIMES = ["best_valid", "s_per_epoch", "best_epoch", "s_to_best", "fit_s", "fit_cpu_s"]


@lru_cache(maxsize=2)
def load_split(name: str, movielens: str, users: int, items: int, interactions: int):
    """(train, test) of data set `name`: per user, 80/20 at random (seed 0)."""
    if name == "ml-100k":
        path = Path(movielens)
        if path.is_dir() and (path / "ml-100k.inter").exists():
            path = path / "ml-100k.inter"
        data = Interactions.from_frame(read_events(path))
    elif name == "power-law":
        data = Interactions.from_frame(synthetic_log(users, items, interactions, seed=0))
    else:
        raise SystemExit(f"unknown data set {name!r}: use ml-100k, power-law")
    return random_split(data, test_frac=0.2, seed=0)


def run(data_name: str, seed: int, label: str, name: str, params: dict, args) -> dict:
    """Fit one model with its defaults (plus `params`) and measure it on the test split."""
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = load_split(data_name, args.movielens, args.users, args.items, args.interactions)
    device = args.device
    model = create_model(name, **{"progress": False, "seed": seed, "device": device, **params})
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(train)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = evaluate(model, test, train=train, k=20)
    history = [h for h in getattr(model, "history_", []) if "seconds" in h]
    best = int(model.fit_info_.get("best_epoch") or len(history))
    seconds = [h["seconds"] for h in history]
    row = {"data": data_name, "model": label, "seed": seed,
           **{m: metrics.get(m, float("nan")) for m in METRICS},
           "s_per_epoch": float(np.mean(seconds)) if seconds else float("nan"),
           "best_epoch": best, "s_to_best": float(np.sum(seconds[:best])) if seconds else float("nan"),
           "fit_s": fit_s, "fit_cpu_s": cpu_s, "best_valid": model.fit_info_.get("best_valid")}
    print(f"{data_name} seed {seed} {label:10s} ndcg@20 {row['ndcg@20']:.4f} "
          f"tail ndcg@20 {row['tail_ndcg@20']:.4f} epoch {best} "
          f"{row['s_per_epoch']:.3f} s/epoch fit {fit_s:.1f}s", flush=True)
    return row


def summarize(frame: pd.DataFrame) -> str:
    summary = frame.groupby(["data", "model"], sort=False)
    lines = ["| data | model | " + " | ".join(METRICS + TIMES) + " |",
             "|---|---|" + "---|" * (len(METRICS) + len(TIMES))]
    for (data, model), group in summary:
        cells = [f"{group[m].mean():.4f} ± {group[m].std(ddof=1) if len(group) > 1 else 0:.4f}"
                 for m in METRICS]
        cells += [f"{group['best_valid'].mean():.4f}", f"{group['s_per_epoch'].mean():.3f}",
                  f"{group['best_epoch'].mean():.0f}",
                  f"{group['s_to_best'].mean():.1f}", f"{group['fit_s'].mean():.1f}",
                  f"{group['fit_cpu_s'].mean():.1f}"]
        lines.append(f"| {data} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="../shared/data/ml-100k",
                    help="MovieLens-100K folder (RecBole atomic files) or .inter/u.data file")
    ap.add_argument("--sets", default="ml-100k,power-law")
    ap.add_argument("--models", default="mf,lightgcn,sgl,simgcl,xsimgcl")
    ap.add_argument("--model", action="append", type=parse_model, metavar="LABEL=NAME:key=value,...",
                    help="a model variant to compare (repeat); replaces --models")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--users", type=int, default=60000)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--jobs", type=int, default=1, help="fit this many models at once, in processes")
    ap.add_argument("--csv", help="also write the per-run rows here")
    ap.add_argument("--summarize", nargs="+", metavar="CSV", help="print the table of earlier runs")
    args = ap.parse_args()
    if args.summarize:
        print(summarize(pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    models = dict(args.model) if args.model else {n: (n, {}) for n in args.models.split(",")}
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads | "
          f"torch {torch.__version__} on {where} | {args.jobs} jobs", flush=True)
    cells = [(data_name, seed, label, name, params) for data_name in args.sets.split(",")
             for seed in map(int, args.seeds.split(",")) for label, (name, params) in models.items()]
    rows = []

    def keep(row: dict) -> None:
        rows.append(row)
        if args.csv:  # after every run, so a cut-short run keeps what it finished
            pd.DataFrame(rows).to_csv(args.csv + ".tmp", index=False)
            os.replace(args.csv + ".tmp", args.csv)

    run_cells(run, cells, args, args.jobs, keep)
    print(summarize(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
