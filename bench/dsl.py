"""Dynamic sparse training (`density`): model folder size, serving memory, scoring time and
NDCG@20 against the dense model.

    python bench/dsl.py [--movielens ../shared/data/ml-100k] [--models mf,lightgcn]
                        [--densities 1.0,0.5,0.2,0.1] [--seeds 0] [--param key=value ...]
                        [--device cpu|cuda] [--threads N] [--csv FILE]

MovieLens-100K (every rating an interaction), split per user 80/20 at random (seed 0). Each
model is fitted with its defaults (validation carve-out, early stopping, refit) at each
density, saved to a folder and loaded back, then measured:
- NDCG@20 and Recall@20 on the test split (training items excluded);
- bytes of the folder and of its weights file (factors stored as CSR where that is smaller);
- the share of non-zero entries of the exported user and item factors;
- serving memory: the factor bytes the loaded model holds (`held_kb`: CSR where that is
  smaller, as the server holds them), what the same factors take dense and as scipy CSR
  (float32 values, int32 column indices, int32 row pointers);
- scoring every user against every item: the dense product U V' against the CSR product
  (V_csr U'), best of 10, on the same factors.
`--products 1682,100000` instead times those products (and torch's sparse CSR product) on
random factors of 1024 users, 64 dimensions and each number of items, at each density.

`--serving` also serves each saved model (seen items: the training split) from a server
process twice, factors as loaded (CSR where smaller) and densified, and reports held factor
bytes, process memory and request latency (bench/_sparse_serving.py);
`--serving-generated 1000000,100000,64` does that instead on generated mf folders of that
many users, items and dimensions at each density (random factors, one seen item per user).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _sparse_serving import compare, generated, workload

from recsys import Interactions, create_model, load_model
from recsys.data import random_split, read_events
from recsys.evaluate import evaluate
from recsys.models.base import save_seen

METRICS = ["ndcg@20", "recall@20"]


def load_split(movielens: str) -> tuple[Interactions, Interactions]:
    path = Path(movielens)
    if path.is_dir():
        path = path / "ml-100k.inter"
    return random_split(Interactions.from_frame(read_events(path)), test_frac=0.2, seed=0)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def csr_bytes(matrix: sp.csr_matrix) -> int:
    return matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes


def best_of(fn, repeat: int = 10) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def product_times(n_items: int, density: float, users: int = 1024, dim: int = 64) -> dict:
    """Milliseconds (best of 10) of scoring `users` random sparse user rows against `n_items`
    random item factors at `density`: dense, scipy CSR and torch CSR products."""
    rng = np.random.default_rng(0)
    u, v = (rng.standard_normal((n, dim)).astype(np.float32) for n in (users, n_items))
    u[rng.random(u.shape) > density] = 0
    v[rng.random(v.shape) > density] = 0
    v_csr, v_torch = sp.csr_matrix(v), torch.from_numpy(v).to_sparse_csr()
    u_t = torch.from_numpy(u).T.contiguous()
    return {"items": n_items, "density": density,
            "dense_ms": best_of(lambda: u @ v.T) * 1000,
            "scipy_csr_ms": best_of(lambda: (v_csr @ u.T).T) * 1000,
            "torch_csr_ms": best_of(lambda: torch.sparse.mm(v_torch, u_t)) * 1000}


def run(name: str, density: float, seed: int, train: Interactions, test: Interactions,
        args) -> tuple[dict, list[dict]]:
    """The row of one fit, and the serving rows of its folder (with --serving)."""
    params = {"progress": False, "seed": seed, "device": args.device, "density": density,
              **dict(p.split("=", 1) for p in args.param)}
    model = create_model(name, **params)
    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.save(folder)
        total, weights = folder_bytes(folder), (folder / "weights.safetensors").stat().st_size
        loaded = load_model(folder)
        served = []
        if args.serving:
            save_seen(folder, train)
            requests = workload(train.user_map.ids, train.item_map.ids, args.requests)
            served = [{"data": f"ml-100k {name}", "density": density, **r}
                      for r in compare(folder, requests)]
    metrics = evaluate(loaded, test, train=train, k=20)
    users = loaded.user_factors().detach().cpu().float().numpy()
    items = loaded.item_factors().detach().cpu().float().numpy()
    dense_bytes = users.nbytes + items.nbytes
    user_csr, item_csr = sp.csr_matrix(users), sp.csr_matrix(items)
    dense_s = best_of(lambda: users @ items.T)
    # sparse items times the dense block of user rows (rows of a CSR user matrix densified)
    sparse_s = best_of(lambda: (item_csr @ user_csr.toarray().T).T)
    row = {"model": name, "density": density, "seed": seed,
           **{m: metrics[m] for m in METRICS},
           "best_epoch": model.fit_info_.get("best_epoch"), "fit_s": fit_s,
           "folder_kb": total / 1024, "weights_kb": weights / 1024,
           "user_nnz": float(np.count_nonzero(users) / users.size),
           "item_nnz": float(np.count_nonzero(items) / items.size),
           "held_kb": sum(t.nbytes for t in loaded.factor_tables()) / 1024,
           "serving_dense_kb": dense_bytes / 1024,
           "serving_csr_kb": (csr_bytes(user_csr) + csr_bytes(item_csr)) / 1024,
           "score_dense_ms": dense_s * 1000, "score_csr_ms": sparse_s * 1000}
    print(f"{name} d={density} seed {seed}: ndcg@20 {row['ndcg@20']:.4f} epoch "
          f"{row['best_epoch']} fit {fit_s:.1f}s folder {row['folder_kb']:.0f} KB "
          f"(weights {row['weights_kb']:.0f} KB) nnz {row['user_nnz']:.2f}/{row['item_nnz']:.2f} "
          f"serving {row['serving_dense_kb']:.0f} KB dense, {row['serving_csr_kb']:.0f} KB csr; "
          f"scoring {row['score_dense_ms']:.1f} ms dense, {row['score_csr_ms']:.1f} ms csr",
          flush=True)
    return row, served


def summarize(frame: pd.DataFrame) -> str:
    columns = ["ndcg@20", "recall@20", "best_epoch", "fit_s", "folder_kb", "weights_kb",
               "user_nnz", "item_nnz", "held_kb", "serving_dense_kb", "serving_csr_kb", "score_dense_ms",
               "score_csr_ms"]
    means = frame.groupby(["model", "density"], sort=False)[columns].mean()
    lines = ["| model | density | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (model, density), row in means.iterrows():
        cells = [f"{row[c]:.4f}" if c in METRICS else f"{row[c]:.2f}" if c.endswith("nnz")
                 else f"{row[c]:.1f}" for c in columns]
        lines.append(f"| {model} | {density} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SERVING_COLUMNS = ["factor_mb", "VmRSS_loaded_mb", "VmRSS_mb", "VmHWM_mb", "recommend_p50_ms",
                   "recommend_p99_ms", "fold_in_p50_ms", "score_p50_ms", "similar_p50_ms"]


def serving_table(rows: list[dict]) -> str:
    lines = ["| data | density | held | " + " | ".join(SERVING_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(SERVING_COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if c == "factor_mb" else f"{row[c]:.1f}" if c.endswith("mb")
                 else f"{row[c]:.2f}" for c in SERVING_COLUMNS]
        lines.append(f"| {row['data']} | {row['density']} | {row['held']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> None:
    pd.DataFrame(rows).to_csv(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="../shared/data/ml-100k",
                    help="MovieLens-100K folder (RecBole atomic files) or its .inter file")
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--densities", default="1.0,0.5,0.2,0.1")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a model parameter for every run (repeat), e.g. prune_every=500")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--csv", help="also write the per-run rows here")
    ap.add_argument("--products", help="only time the scoring products for these item counts")
    ap.add_argument("--serving", action="store_true",
                    help="also serve each folder, factors as loaded and densified")
    ap.add_argument("--serving-generated", metavar="USERS,ITEMS,DIM",
                    help="only serve generated folders of this size at each density")
    ap.add_argument("--requests", type=int, default=400,
                    help="known-user /recommend requests per server (a quarter of that of "
                         "each other kind)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.products:
        print(pd.DataFrame([product_times(int(n), float(d)) for n in args.products.split(",")
                            for d in args.densities.split(",")]).round(2).to_string(index=False))
        return
    if args.serving_generated:
        n_users, n_items, dim = map(int, args.serving_generated.split(","))
        rows = generated(n_users, n_items, dim, [float(d) for d in args.densities.split(",")],
                         args.requests)
        if args.csv:
            write_csv(rows, args.csv)
        print(serving_table(rows))
        return
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads "
          f"| torch {torch.__version__} on {where}", flush=True)
    train, test = load_split(args.movielens)
    rows, served = [], []
    for name in args.models.split(","):
        for density in map(float, args.densities.split(",")):
            for seed in map(int, args.seeds.split(",")):
                row, serving_rows = run(name, density, seed, train, test, args)
                rows.append(row)
                served += serving_rows
                if args.csv:  # after every run, so a cut-short run keeps what it finished
                    write_csv(rows, args.csv)
                    if served:
                        write_csv(served, args.csv.removesuffix(".csv") + "_serving.csv")
    print(summarize(pd.DataFrame(rows)))
    if served:
        print(serving_table(served))


if __name__ == "__main__":
    main()
