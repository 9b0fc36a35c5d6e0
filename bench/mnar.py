"""Unbiased learning on simulated MNAR data: naive MF vs Rel-MF vs clipped Rel-MF vs UBPR.

    python bench/mnar.py [--biases 0.5,1.0,1.5] [--seeds 0,1,2] [--users 6000 --items 3000
                         --interactions 120000] [--model "LABEL=NAME:key=value,..." ...]

For each popularity-bias strength and seed, simulates clicks (recsys.data.simulate), trains
each model on the biased training clicks, and reports DCG@3, DCG@5, Recall@5 and MAP@5 on
the uniformly exposed test set, overall and with only rare items (outside the 20% most
clicked) counted as relevant, as mean +- standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from recsys import create_model
from recsys.data.simulate import simulate
from recsys.evaluate.unbiased import candidate_metrics

MODELS = {
    "naive MF (bce)": ("mf", {"loss": "bce"}),
    "Rel-MF (no clip)": ("relmf", {"clip": 0.0}),
    "Rel-MF clipped": ("relmf", {}),
    "UBPR": ("ubpr", {}),
}
METRICS = ["dcg@3", "dcg@5", "recall@5", "map@5"]
TRUE_PROPENSITY = "true_propensity"


def parse_model(spec: str) -> tuple[str, tuple[str, dict]]:
    """'Rel-MF lr 5e-4=relmf:lr=0.0005,epochs=600' -> (label, (registry name, params)).

    The pseudo-parameter `true_propensity` trains on the simulator's true exposure propensities
    instead of ones estimated from item popularity."""
    from pipelines.commands.train import parse_params

    label, _, rest = spec.rpartition("=") if ":" not in spec else spec.partition("=")
    name, _, params = rest.partition(":")
    pairs = [p for p in params.split(",") if p]
    params = parse_params(name, [p for p in pairs if p != TRUE_PROPENSITY])
    if TRUE_PROPENSITY in pairs:
        params[TRUE_PROPENSITY] = True
    return label or name, (name, params)


@lru_cache(maxsize=1)
def simulated(bias: float, seed: int, users: int, items: int, interactions: int):
    return simulate(users, items, interactions, popularity_bias=bias, seed=seed)


def run(bias: float, seed: int, label: str, name: str, params: dict, args) -> dict:
    """Fit one model on one simulated data set; its unbiased-test metrics."""
    if args.jobs > 1:
        torch.set_num_threads(1)
    sim = simulated(bias, seed, args.users, args.items, args.interactions)
    clicks = sim.train.item_popularity
    rare = clicks < np.quantile(clicks, 0.8)
    params = dict(params)
    train = sim.train
    if params.pop(TRUE_PROPENSITY, False):
        train = train.with_propensity(sim.train_propensity)
    start = time.perf_counter()
    model = create_model(name, **{"progress": False, "seed": seed, "device": args.device, **params})
    model.fit(train)
    seconds = time.perf_counter() - start
    metrics = candidate_metrics(model, sim.unbiased_test, k=(3, 5), rare_items=rare)
    print(f"bias {bias} seed {seed} {label:16s} dcg@5 {metrics['dcg@5']:.4f} "
          f"rare dcg@5 {metrics['rare_dcg@5']:.4f} ({seconds:.0f}s)", flush=True)
    return {"bias": bias, "seed": seed, "model": label, "fit_s": seconds,
            **{m: metrics[m] for m in METRICS}, **{f"rare_{m}": metrics[f"rare_{m}"] for m in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--biases", default="0.5,1.0,1.5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--interactions", type=int, default=40_000)
    ap.add_argument("--model", action="append", type=parse_model, metavar="LABEL=NAME:key=value,...",
                    help="a model to compare (repeat; default: naive MF, Rel-MF, clipped Rel-MF, UBPR)")
    ap.add_argument("--device", default="auto", help="torch device for the mf models")
    ap.add_argument("--jobs", type=int, default=1, help="fit this many models at once, in processes "
                    "of one thread each")
    ap.add_argument("--csv", help="also write the per-run rows here")
    ap.add_argument("--summarize", nargs="+", metavar="CSV",
                    help="print the table of earlier runs' CSV files (e.g. seeds run in parallel)")
    args = ap.parse_args()
    if args.summarize:
        summarize(pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True))
        return
    args.models = dict(args.model) if args.model else MODELS
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__} on {device}")
    cells = [(bias, seed, label, name, params) for bias in map(float, args.biases.split(","))
             for seed in map(int, args.seeds.split(",")) for label, (name, params) in args.models.items()]
    if args.jobs > 1:
        # spawn: forked children cannot use CUDA once the parent has touched it
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(run, *zip(*cells, strict=True), [args] * len(cells)))
    else:
        rows = [run(*cell, args) for cell in cells]
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    summarize(frame)


def summarize(frame: pd.DataFrame) -> None:
    cols = METRICS + [f"rare_{m}" for m in METRICS]
    summary = frame.groupby(["bias", "model"], sort=False)[cols].agg(["mean", "std"])
    print("| bias | model | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (bias, model), row in summary.iterrows():
        cells = [f"{row[(c, 'mean')]:.4f} ± {row[(c, 'std')]:.4f}" for c in cols]
        print(f"| {bias} | {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
