"""Graded feedback: GNOLR vs one binary model per level vs a multi-task model with separate heads.

    python bench/ordinal.py [--data sim,ml100k] [--seeds 0,1,2] [--device cpu|cuda]
                            [--model "LABEL=NAME:key=value,..." ...] [--jobs N] [--csv FILE]

Data: simulated clicks with levels click < cart < purchase (recsys.data.simulate: training
period and a later test period), and MovieLens-100K ratings mapped to levels 1-3 -> 1,
4 -> 2, 5 -> 3 (a per-user random 80/20 split by seed). Every model trains on the same split
with the same seed. Per level g, NDCG@20 ranks by that level (GNOLR: z_g over the first g
heads; multi-task: head g; binary: the model trained on y >= g), with the test items of
level >= g relevant; graded NDCG@20 (gain 2^level - 1) ranks by the deepest level (for the
binary family, the top level's model). "binary, levels ignored" is one model of every click
(level >= 1) ranking for every level. Fit seconds sum the models a row needs.
"""

from __future__ import annotations

import argparse
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cells import parse_model, run_cells

from recsys import create_model
from recsys.data import Interactions, random_split, read_atomic
from recsys.data.simulate import simulate
from recsys.evaluate.graded import graded_metrics

ML100K = Path("/work/shared/data/ml-100k/ml-100k.inter")
K = 20
MODELS = {
    "GNOLR (nested)": ("gnolr", {}),
    "multi-task heads": ("gnolr", {"objective": "multitask"}),
    "binary per level": ("gnolr", {"objective": "binary"}),
    "binary, levels ignored": ("gnolr", {"objective": "binary", "grade": 1}),
}


@lru_cache(maxsize=2)
def dataset(name: str, seed: int, args_key: tuple) -> tuple[Interactions, Interactions]:
    users, items, interactions, path = args_key
    if name == "sim":
        sim = simulate(users, items, interactions, seed=seed)
        return sim.train, sim.test
    frame = read_atomic(path)
    data = Interactions.from_frame(frame, rating_col="rating", levels_from_rating=(1, 4, 5),
                                   source=str(path))
    return random_split(data, test_frac=0.2, seed=seed)


class ByLevel:
    """A scorer ranking by one level of a model."""

    def __init__(self, model, grade: int) -> None:
        self.model, self.grade = model, grade

    def score(self, users, items=None):
        return self.model.score(users, items, grade=self.grade)


def fit(name: str, params: dict, train: Interactions, seed: int, device: str):
    start = time.perf_counter()
    model = create_model(name, **{"progress": False, "seed": seed, "device": device, **params})
    model.fit(train)
    return model, time.perf_counter() - start


def run(data: str, seed: int, label: str, name: str, params: dict, args) -> dict:
    """Fit one model family on one data set and seed; its per-level and graded NDCG@20."""
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = dataset(data, seed, (args.users, args.items, args.interactions, args.ml100k))
    names = test.level_names
    row = {"data": data, "seed": seed, "model": label}
    binary = params.get("objective") == "binary"
    if binary and "grade" not in params:  # the family: one model per level
        seconds, top = 0.0, None
        for g, level in enumerate(names, start=1):
            model, s = fit(name, {**params, "grade": g}, train, seed, args.device)
            seconds += s
            row[f"{level}_ndcg@{K}"] = graded_metrics(model, test, train=train, k=K)[
                f"{level}_ndcg@{K}"]
            top = model
    elif binary:  # one model (e.g. grade=1: levels ignored) ranking for every level
        top, seconds = fit(name, params, train, seed, args.device)
        metrics = graded_metrics(top, test, train=train, k=K)
        row.update({f"{level}_ndcg@{K}": metrics[f"{level}_ndcg@{K}"] for level in names})
    else:
        top, seconds = fit(name, params, train, seed, args.device)
        for g, level in enumerate(names, start=1):
            row[f"{level}_ndcg@{K}"] = graded_metrics(ByLevel(top, g), test, train=train, k=K)[
                f"{level}_ndcg@{K}"]
    row[f"graded_ndcg@{K}"] = graded_metrics(top, test, train=train, k=K)[f"graded_ndcg@{K}"]
    row["fit_s"] = seconds
    shown = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith(f"@{K}"))
    print(f"{data} seed {seed} {label:18s} {shown} ({seconds:.0f}s)", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sim,ml100k", help="sim and/or ml100k")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--users", type=int, default=3000, help="simulated users")
    ap.add_argument("--items", type=int, default=1500, help="simulated items")
    ap.add_argument("--interactions", type=int, default=60_000, help="simulated training clicks")
    ap.add_argument("--ml100k", default=str(ML100K), help="the ml-100k.inter file")
    ap.add_argument("--model", action="append", type=parse_model,
                    metavar="LABEL=NAME:key=value,...",
                    help="a model to compare (repeat; default: GNOLR, multi-task, binary)")
    ap.add_argument("--device", default="auto", help="torch device: cpu, cuda or auto")
    ap.add_argument("--jobs", type=int, default=1,
                    help="fit this many model families at once, in processes of one thread each")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per fit (default: torch's choice; 1 with --jobs > 1)")
    ap.add_argument("--csv", help="also write the per-run rows here")
    ap.add_argument("--summarize", nargs="+", metavar="CSV", help="print the table of earlier "
                    "runs' CSV files")
    args = ap.parse_args()
    if args.summarize:
        summarize(pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True))
        return
    models = dict(args.model) if args.model else MODELS
    if args.jobs > 1 and not args.threads:
        args.threads = 1
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__} on {device}")
    cells = [(data, seed, label, name, params) for data in args.data.split(",")
             for seed in map(int, args.seeds.split(","))
             for label, (name, params) in models.items()]
    frame = pd.DataFrame(run_cells(run, cells, args, args.jobs))
    if args.csv:
        frame.to_csv(args.csv, index=False)
    summarize(frame)


def summarize(frame: pd.DataFrame) -> None:
    """One markdown table per data set: mean +- standard deviation over seeds."""
    for data, part in frame.groupby("data", sort=False):
        cols = [c for c in part.columns if c.endswith(f"@{K}") and part[c].notna().any()]
        cols = sorted(cols, key=lambda c: c.startswith("graded_")) + ["fit_s"]
        summary = part.groupby("model", sort=False)[cols].agg(["mean", "std"])
        seeds = part["seed"].nunique()
        print(f"\n{data} ({seeds} seeds)\n")
        print("| model | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for model, row in summary.iterrows():
            cells = [f"{row[(c, 'mean')]:.4f} ± {np.nan_to_num(row[(c, 'std')]):.4f}"
                     if c != "fit_s" else f"{row[(c, 'mean')]:.0f}" for c in cols]
            print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
