"""How cost grows with data: every stage timed on generated power-law logs of growing size.

    python bench/scale.py [--device cpu|cuda] [--sizes 1000000,10000000] [--items 20000]
        [--users-per 20] [--batch 65536] [--threads N] [--json out.json]
    python bench/scale.py --plot bench/scale.png --table a.json b.json ...

Each size N is a `synthetic_log` of N interactions over N / `--users-per` users and a fixed
catalogue of `--items` items (generated on `--device`), split 80/20 per user. With users
proportional to N and the catalogue fixed, every stage should cost O(N): training touches
each pair a fixed number of times, full-ranking evaluation scores users x items. Stages:
prepare (ids, CSR matrix, split; generation apart), als (one iteration, 64 factors; implicit
on the host CPU), mf and lightgcn (one epoch of BPR at batch `--batch`, 64 factors, 3 layers),
evaluate (all test users, K=20), recommend (top-20 for every user, arrays on the host).
Peak memory: the process's peak RSS so far and the GPU's peak allocation for the size.
`--plot` draws seconds against interactions on log-log axes from the JSON files of earlier
runs, `--table` prints their markdown table with the fitted growth exponent of each stage.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch

from recsys import Interactions, create_model
from recsys.data.split import holdout
from recsys.data.synthetic import synthetic_log
from recsys.evaluate import evaluate
from recsys.inference import Ranker

STAGES = ("prepare", "als", "mf", "lightgcn", "evaluate", "recommend")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn, device: torch.device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def epoch_seconds(name: str, train: Interactions, args, **params) -> tuple[object, float]:
    """A model trained one epoch (no validation) and the seconds of that epoch."""
    model = create_model(name, factors=64, epochs=1, valid_frac=0.0, batch_size=args.batch,
                         progress=False, device=args.device, **params)
    model.fit(train)
    return model, model.history_[0]["seconds"]


def prepare(log) -> tuple[Interactions, Interactions, Interactions]:
    data = Interactions.from_frame(log)
    return data, *holdout(data, 0.2, seed=0)


def measure(n: int, args, device: torch.device) -> dict:
    n_users = max(1, n // args.users_per)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, before its statistics are reset
        torch.cuda.reset_peak_memory_stats(device)
    log, gen_s = clock(lambda: synthetic_log(n_users, args.items, n, seed=0, device=device), device)
    (data, train, test), prep_s = clock(lambda: prepare(log), device)
    row = {"interactions": data.nnz, "users": data.n_users, "items": data.n_items,
           "generate_s": gen_s, "prepare_s": prep_s}
    if "als" not in args.skip:
        als = create_model("als", factors=64, iterations=1, device="cpu")
        row["als_s"] = clock(lambda: als.fit(train), device)[1]
    mf, row["mf_s"] = epoch_seconds("mf", train, args)
    if "lightgcn" not in args.skip:
        row["lightgcn_s"] = epoch_seconds("lightgcn", train, args, layers=3)[1]
    evaluate(mf, test, train=train, k=20, users=np.flatnonzero(test.user_degree > 0)[:1000])  # warm
    row["evaluate_s"] = clock(lambda: evaluate(mf, test, train=train, k=20), device)[1]
    ranker = Ranker(mf, train)
    row["recommend_s"] = clock(lambda: ranker.recommend(np.arange(train.n_users), 20), device)[1]
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cuda":
        row["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    row["device"] = str(device)
    return row


def slope(rows: list[dict], key: str) -> float | None:
    """Least-squares exponent b of seconds ~ interactions^b over the rows that have `key`."""
    pts = [(math.log(r["interactions"]), math.log(r[key])) for r in rows if r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def table(rows: list[dict]) -> str:
    cols = [f"{s}_s" for s in STAGES]
    lines = ["| device | interactions | users x items | " + " | ".join(f"{s} s" for s in STAGES)
             + " | peak RSS GB | peak GPU GB |", "|" + "---|" * (len(cols) + 5)]
    for r in rows:
        cells = [f"{r[c]:.2f}" if c in r else "-" for c in cols]
        gpu = f"{r['peak_gpu_gb']:.1f}" if "peak_gpu_gb" in r else "-"
        lines.append(f"| {r['device']} | {r['interactions']:,} | {r['users']:,} x {r['items']:,} | "
                     + " | ".join(cells) + f" | {r['peak_rss_gb']:.1f} | {gpu} |")
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = [r for r in rows if r["device"] == device]
        exps = {s: slope(mine, f"{s}_s") for s in STAGES}
        shown = ", ".join(f"{s} {b:.2f}" for s, b in exps.items() if b is not None)
        if shown:
            lines.append(f"\nGrowth exponent on {device} (seconds ~ interactions^b): {shown}")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = sorted((r for r in rows if r["device"] == device), key=lambda r: r["interactions"])
        style = "-" if device.startswith("cuda") else "--"
        for color, stage in enumerate(STAGES):  # a colour per stage, a line style per device
            pts = [(r["interactions"], r[f"{stage}_s"]) for r in mine if f"{stage}_s" in r]
            if pts:
                ax.loglog(*zip(*pts, strict=True), style, marker="o", color=f"C{color}",
                          label=f"{stage} ({device})")
    xs = sorted({r["interactions"] for r in rows})
    if len(xs) > 1:
        ref = [x / xs[0] for x in xs]
        ax.loglog(xs, ref, ":", color="grey", label="linear (slope 1)")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds")
    ax.set_title("recsys cost against data size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--sizes", default="1000000,10000000", help="interactions, comma-separated")
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--users-per", type=int, default=20, help="interactions per user (mean)")
    ap.add_argument("--batch", type=int, default=65536, help="mf and lightgcn batch size")
    ap.add_argument("--skip", default="", help="stages to skip: als,lightgcn")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--json", type=Path, help="write the rows here (after each size)")
    ap.add_argument("--plot", type=Path, help="draw the rows of the JSON files given to --table")
    ap.add_argument("--table", nargs="*", type=Path, help="JSON files of earlier runs to report")
    args = ap.parse_args()
    if args.table is not None:
        rows = [r for path in args.table for r in json.loads(path.read_text())]
        print(table(rows))
        if args.plot:
            plot(rows, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for n in map(int, args.sizes.split(",")):
        rows.append(measure(n, args, device))
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
