"""Evaluation and all-user recommendation against their floor.

    python bench/eval_floor.py [--device cpu|cuda] [--sizes 80000:4000:2000,1000000:50000:10000]
        [--factors 64] [--k 20] [--repeats 3] [--threads N] [--json out.json]

Each size is INTERACTIONS:USERS:ITEMS of a generated power-law log (`synthetic_log`), split
80/20 per user. The model is a factor model with random factors on `--device` (evaluation
cost does not depend on what the factors learned). Timed, each the median of `--repeats`
runs after one warm-up:
- floor: one matrix product and one `torch.topk` of K per block of users, over the test users
  (for evaluation) or all users (for recommend), no masking, no metrics, results left on the
  device (the least any full-ranking evaluation must do);
- evaluate: `recsys.evaluate.evaluate` at K (all metrics, slices, coverage), training items
  masked, the exact tie rule;
- recommend: `Ranker.recommend` of top-K for every user, as arrays on the host;
- parquet: `pipelines.batch.recommend_to_parquet` for every user (ids, scores, ranks on disk).
Ratios are seconds / floor seconds; the target is evaluate and recommend within 2x.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys import Interactions, create_model
from recsys.data.split import holdout
from recsys.data.synthetic import synthetic_log
from recsys.evaluate import evaluate
from recsys.inference import Ranker
from recsys.ranking import block_rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall seconds of `fn()` over `repeats` runs, after one warm-up run."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_factor_model(train: Interactions, factors: int, device: torch.device, seed: int = 0):
    """A fitted-looking factor model (id maps of `train`) with random factors on `device`."""
    model = create_model("mf", factors=factors, device=str(device))
    model._start_fit(train)
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(train.n_users, factors, generator=gen) / factors**0.5
    items = torch.randn(train.n_items, factors, generator=gen) / factors**0.5
    model._set_factors(users.to(device), items.to(device))
    return model


def floor(model, users: np.ndarray, k: int, device: torch.device) -> list[torch.Tensor]:
    """One product and one top-k per memory-sized block of users, results kept on the device
    (on the CPU the product is numpy's, as BLAS threads there may outnumber torch's)."""
    u, v = model.user_factors(), model.item_factors()
    step = block_rows(v.shape[0], device)
    u_host, vt_host = u.cpu().numpy(), np.ascontiguousarray(v.cpu().numpy().T)
    out = []
    for start in range(0, len(users), step):
        block = users[start:start + step]
        if device.type == "cpu":
            scores = torch.from_numpy(u_host[block] @ vt_host)
        else:
            scores = u[torch.from_numpy(block).to(device)] @ v.T
        out.append(torch.topk(scores, k, dim=1).indices)
    return out


def measure(n: int, n_users: int, n_items: int, args, device: torch.device) -> dict:
    start = time.perf_counter()
    log = synthetic_log(n_users, n_items, n, seed=0, device=device)
    data = Interactions.from_frame(log)
    train, test = holdout(data, 0.2, seed=0)
    prepare = time.perf_counter() - start
    model = random_factor_model(train, args.factors, device)
    test_users = np.flatnonzero(test.user_degree > 0)
    all_users = np.arange(train.n_users)
    ranker = Ranker(model, train)
    row = {"interactions": data.nnz, "users": data.n_users, "items": data.n_items,
           "test_users": len(test_users), "prepare_s": prepare}
    row["floor_eval_s"] = timed(lambda: floor(model, test_users, args.k, device), device, args.repeats)
    row["evaluate_s"] = timed(lambda: evaluate(model, test, train=train, k=args.k), device, args.repeats)
    row["floor_all_s"] = timed(lambda: floor(model, all_users, args.k, device), device, args.repeats)
    row["recommend_s"] = timed(lambda: ranker.recommend(all_users, args.k), device, args.repeats)
    try:
        from pipelines.batch import recommend_to_parquet
    except ImportError as exc:  # pyarrow missing: no Parquet job
        print(f"# parquet skipped: {exc}")
        args.no_parquet = True
    if not args.no_parquet:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "recs.parquet"
            ids = model.user_map_.ids
            row["parquet_s"] = timed(lambda: recommend_to_parquet(ranker, ids, args.k, out, progress=False),
                                     device, args.repeats)
    row["evaluate_ratio"] = row["evaluate_s"] / row["floor_eval_s"]
    row["recommend_ratio"] = row["recommend_s"] / row["floor_all_s"]
    if "parquet_s" in row:
        row["parquet_ratio"] = row["parquet_s"] / row["floor_all_s"]
    return row


def table(rows: list[dict], device: str) -> str:
    head = ("| interactions | users x items | floor (test users) s | evaluate s | ratio | "
            "floor (all users) s | recommend s | ratio | parquet s | ratio |")
    lines = [f"device: {device}", "", head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['interactions']:,} | {r['users']:,} x {r['items']:,} | {r['floor_eval_s']:.3f} | "
            f"{r['evaluate_s']:.3f} | {r['evaluate_ratio']:.2f} | {r['floor_all_s']:.3f} | "
            f"{r['recommend_s']:.3f} | {r['recommend_ratio']:.2f} | "
            f"{r.get('parquet_s', float('nan')):.3f} | {r.get('parquet_ratio', float('nan')):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--sizes", default="80000:4000:2000,1000000:50000:10000",
                    help="comma-separated INTERACTIONS:USERS:ITEMS")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-parquet", action="store_true", help="skip the Parquet batch job")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 is steadier on a shared machine)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for size in args.sizes.split(","):
        n, n_users, n_items = (int(x) for x in size.split(":"))
        rows.append(measure(n, n_users, n_items, args, device))
        print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(table(rows, f"{device} ({name}, torch {torch.__version__}, {torch.get_num_threads()} threads)"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
