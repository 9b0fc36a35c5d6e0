"""Epoch time of `mf` and `lightgcn` against bare torch loops on the same data and device.

    python bench/train_throughput.py [--device cuda] [--users 1000000 --items 200000
        --interactions 20000000] [--batches 65536,262144] [--models mf,lightgcn] [--epochs 2]

A power-law log (`synthetic_log`, drawn on `--device`) is trained for `--epochs` epochs
(no validation); reported is the median epoch after the first (the first pays one-off
warm-up work). Floors, written as one would by hand, one sync per epoch:
- mf: BPR on user and item embeddings (64 dims), a permutation per epoch, uniform negatives
  (`bench/train_overhead.py`'s loop, L2 penalty, Adam);
- lightgcn: the same BPR on the mean of 3 rounds of sparse CSR propagation
  D^-1/2 A D^-1/2 e over the whole graph per step, L2 on the batch's ego embeddings, Adam.
The recsys side fits `create_model("mf" | "lightgcn", ...)` through the training template
(its sampler also redraws negatives that are positives).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from train_overhead import FACTORS, EpochClock, bare_epochs, sync

from recsys import Interactions, create_model
from recsys.data.graph import BipartiteGraph
from recsys.data.synthetic import synthetic_log
from recsys.losses import bpr_loss

LAYERS, REG = 3, 1e-4


def bare_lightgcn(data: Interactions, batch: int, epochs: int, device: torch.device, lr: float) -> float:
    """Median seconds per epoch (after the first) of a hand-written LightGCN BPR loop."""
    adj = BipartiteGraph(data, device).adjacency()
    rows, cols = data.coo
    users = torch.from_numpy(rows).to(device)
    items = torch.from_numpy(cols).to(device) + data.n_users
    torch.manual_seed(0)
    ego = torch.nn.Parameter(0.1 * torch.randn(data.n_users + data.n_items, FACTORS, device=device))
    opt = torch.optim.Adam([ego], lr=lr)
    times = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        order = torch.randperm(len(users), device=device)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            u, i = users[idx], items[idx]
            j = torch.randint(data.n_items, (len(idx),), device=device) + data.n_users
            opt.zero_grad(set_to_none=True)
            layer, acc = ego, ego
            for _ in range(LAYERS):
                layer = torch.sparse.mm(adj, layer)
                acc = acc + layer
            final = acc / (LAYERS + 1)
            fu, fi, fj = final[u], final[i], final[j]
            reg = (ego[u].pow(2).sum() + ego[i].pow(2).sum() + ego[j].pow(2).sum()) / (2 * len(idx))
            loss = bpr_loss((fu * fi).sum(-1), (fu * fj).sum(-1)).mean() + REG * reg
            loss.backward()
            opt.step()
            total += loss.detach()
        float(total)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:] or times)


def template(name: str, data: Interactions, batch: int, epochs: int, device: torch.device,
             **params) -> float:
    """Median seconds per epoch (after the first) of a recsys model fitted without validation."""
    model = create_model(name, factors=FACTORS, epochs=epochs, valid_frac=0.0, batch_size=batch,
                         progress=False, device=str(device), seed=0, **params)
    clock = EpochClock(device, time.perf_counter)
    model.fit(data, callbacks=[clock])
    return statistics.median(clock.times[1:] or clock.times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--interactions", type=int, default=20_000_000)
    ap.add_argument("--batches", default="65536,262144")
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--lightgcn-batches", help="batch sizes for lightgcn (default: --batches)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    start = time.perf_counter()
    data = Interactions.from_frame(synthetic_log(args.users, args.items, args.interactions, seed=0,
                                                 device=device))
    print(f"# {data.n_users} users, {data.n_items} items, {data.nnz} pairs; data in "
          f"{time.perf_counter() - start:.1f} s; torch {torch.__version__} on {device}", flush=True)
    rows = []
    runs = [(name, int(b)) for name in args.models.split(",")
            for b in ((args.lightgcn_batches or args.batches) if name == "lightgcn"
                      else args.batches).split(",")]
    for name, batch in runs:
        if name == "mf":
            bare_epochs(data, batch, 1, device, time.perf_counter)  # warm-up
            bare = bare_epochs(data, batch, max(1, args.epochs - 1), device, time.perf_counter)
            ours = template("mf", data, batch, args.epochs, device, lr=0.002, reg=0.03)
        else:
            lr = 0.01
            bare = bare_lightgcn(data, batch, args.epochs, device, lr)
            ours = template("lightgcn", data, batch, args.epochs, device, lr=lr, layers=LAYERS)
        rows.append({"model": name, "batch": batch, "bare_s": bare, "recsys_s": ours,
                     "ratio": ours / bare})
        print(json.dumps(rows[-1]), flush=True)
    print("| model | batch | bare s/epoch | recsys s/epoch | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']:,} | {r['bare_s']:.2f} | {r['recsys_s']:.2f} "
              f"| {r['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
