"""Graph collaborative filtering: mf vs lightgcn vs sgl vs simgcl vs xsimgcl, with defaults.

    python bench/graph.py [--movielens ../shared/data/ml-100k] [--sets ml-100k,power-law]
                          [--models mf,lightgcn,sgl,simgcl,xsimgcl] [--seeds 0,1,2]
                          [--users 60000 --items 20000 --interactions 1000000]
                          [--model "LABEL=NAME:key=value,..." ...] [--device cpu|cuda]
                          [--threads N] [--csv FILE] [--summarize CSV ...]

Each data set is split once per user, 80/20 at random (seed 0; MovieLens-100K: every rating
is an interaction); each model is trained with its defaults (its own validation carve-out,
early stopping and refit) under each seed. Reported: NDCG@20 and Recall@20 over all test
items and over tail items (outside the 20% most popular in train), mean ± standard deviation
over seeds; seconds per training epoch, the selected epoch, seconds of training up to it,
and the whole fit's wall time (selection, validation and refit).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import Interactions, create_model
from recsys.data import random_split, read_events
from recsys.data.synthetic import synthetic_log
from recsys.evaluate import evaluate

METRICS = ["ndcg@20", "recall@20", "tail_ndcg@20", "tail_recall@20"]
TIMES = ["s_per_epoch", "best_epoch", "s_to_best", "fit_s"]


def parse_model(spec: str) -> tuple[str, tuple[str, dict]]:
    """'sgl nd=sgl:view=nd' -> (label, (registry name, params)); a bare name is its own label."""
    from pipelines.commands.train import parse_params

    label, _, rest = spec.partition("=") if ":" in spec else ("", "", spec)
    name, _, params = rest.partition(":")
    return label or name, (name, parse_params(name, [p for p in params.split(",") if p]))


def load_sets(args) -> dict[str, Interactions]:
    sets = {}
    for name in args.sets.split(","):
        if name == "ml-100k":
            path = Path(args.movielens)
            if path.is_dir() and (path / "ml-100k.inter").exists():
                path = path / "ml-100k.inter"
            sets[name] = Interactions.from_frame(read_events(path))
        elif name == "power-law":
            sets[name] = Interactions.from_frame(
                synthetic_log(args.users, args.items, args.interactions, seed=0))
        else:
            raise SystemExit(f"unknown data set {name!r}: use ml-100k, power-law")
    return sets


def run(data_name: str, train: Interactions, test: Interactions, seed: int, label: str, name: str,
        params: dict, device: str) -> dict:
    """Fit one model with its defaults (plus `params`) and measure it on the test split."""
    model = create_model(name, **{"progress": False, "seed": seed, "device": device, **params})
    start = time.perf_counter()
    model.fit(train)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - start
    metrics = evaluate(model, test, train=train, k=20)
    history = [h for h in getattr(model, "history_", []) if "seconds" in h]
    best = int(model.fit_info_.get("best_epoch") or len(history))
    seconds = [h["seconds"] for h in history]
    row = {"data": data_name, "model": label, "seed": seed,
           **{m: metrics.get(m, float("nan")) for m in METRICS},
           "s_per_epoch": float(np.mean(seconds)) if seconds else float("nan"),
           "best_epoch": best, "s_to_best": float(np.sum(seconds[:best])) if seconds else float("nan"),
           "fit_s": fit_s}
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
        cells += [f"{group['s_per_epoch'].mean():.3f}", f"{group['best_epoch'].mean():.0f}",
                  f"{group['s_to_best'].mean():.1f}", f"{group['fit_s'].mean():.1f}"]
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
          f"torch {torch.__version__} on {where}", flush=True)
    rows = []
    for data_name, data in load_sets(args).items():
        train, test = random_split(data, test_frac=0.2, seed=0)
        print(f"# {data_name}: train {train}, test {test.nnz} pairs", flush=True)
        for seed in map(int, args.seeds.split(",")):
            for label, (name, params) in models.items():
                rows.append(run(data_name, train, test, seed, label, name, params, args.device))
                if args.csv:  # after every run, so a cut-short run keeps what it finished
                    pd.DataFrame(rows).to_csv(args.csv + ".tmp", index=False)
                    os.replace(args.csv + ".tmp", args.csv)
    print(summarize(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
