"""New users folded in from their history against the same users known to the model.

    python bench/foldin.py [--data /work/shared/data/ml-100k/ml-100k.inter] [--models als,mf,bpr]
                           [--seeds 0] [--device cpu|cuda] [--alpha A --reg R]

MovieLens-100K, every rating an interaction, per-user random 80/20 split. Each model is fitted
once; every test user is then ranked twice, with training items excluded both times: as a known
user (the model's own user factors) and as a user the model never saw, answered through the
Ranker from the user's training items given as history (`folded_in`). Prints NDCG@20 and
Recall@20 of both and their ratio (targets: >= 0.95 for als, >= 0.9 for mf). `--alpha`/`--reg`
override the least-squares fold-in's confidence and ridge (mf, bpr) for a sweep.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.data import random_split, read_events  # noqa: E402
from recsys.evaluate.metrics import ndcg, recall  # noqa: E402
from recsys.inference import Ranker  # noqa: E402
from recsys.ranking import contains, pair_keys  # noqa: E402

DATA = Path("/work/shared/data/ml-100k/ml-100k.inter")
K = 20


def measure(model, train: Interactions, test: Interactions) -> dict[str, float]:
    """NDCG@K and Recall@K of the test users ranked as known users and as new users."""
    ranker = Ranker(model, train)
    users = np.flatnonzero(test.user_degree > 0)
    known = ranker.recommend(users, K)
    new = ranker.recommend(np.full(len(users), -1), K, history=train.matrix[users])
    assert new.folded_in.all() and not known.folded_in.any()
    test_keys = pair_keys(test.matrix)
    n_relevant = torch.from_numpy(test.user_degree[users])
    out = {}
    for name, ranked in (("known", known), ("new", new)):
        keys = torch.from_numpy(users[:, None] * test.n_items + ranked.items)
        hits = contains(test_keys, keys) & torch.from_numpy(np.isfinite(ranked.scores))
        out[f"{name}_ndcg"] = float(ndcg(hits, n_relevant).mean())
        out[f"{name}_recall"] = float(recall(hits, n_relevant).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", default="als,mf,bpr")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--alpha", type=float, help="fold-in confidence of history items (mf, bpr)")
    ap.add_argument("--reg", type=float, help="fold-in ridge, relative to the item factors (mf, bpr)")
    args = ap.parse_args()

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# {platform.node()} | {os.cpu_count()} cpus | torch {torch.__version__} | gpu {gpu} | "
          f"device {args.device}")
    data = Interactions.from_frame(read_events(args.data))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = random_split(data, test_frac=0.2, seed=seed)
        for name in args.models.split(","):
            start = time.perf_counter()
            model = create_model(name, seed=seed, device=args.device, progress=False).fit(train)
            fit = time.perf_counter() - start
            if args.alpha is not None:
                model.fold_in_alpha = args.alpha
            if args.reg is not None:
                model.fold_in_reg = args.reg
            start = time.perf_counter()
            result = measure(model, train, test)
            rows.append((name, seed, result, fit, time.perf_counter() - start))

    header = ("model", "seed", "known ndcg@20", "new ndcg@20", "ndcg ratio", "known recall@20",
              "new recall@20", "recall ratio", "fit s", "rank s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, seed, r, fit, rank in rows:
        print(f"| {name} | {seed} | {r['known_ndcg']:.4f} | {r['new_ndcg']:.4f} | "
              f"{r['new_ndcg'] / r['known_ndcg']:.3f} | {r['known_recall']:.4f} | {r['new_recall']:.4f} | "
              f"{r['new_recall'] / r['known_recall']:.3f} | {fit:.1f} | {rank:.1f} |")


if __name__ == "__main__":
    main()
