"""Our als, bpr and mf against `implicit` used directly, on the same split, in one run.

    python bench/baselines.py [--users 60000 --items 20000 --interactions 1200000]
                              [--movielens ../shared/data/ml-100k] [--repeats 3]

Prints NDCG@20 and fit time side by side, with ours / peer ratios. The generated data set has
power-law item popularity and latent taste structure (recsys.data.synthetic). `mf` (torch,
BPR loss) is compared with implicit's BPR, the same model family.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import implicit.als  # noqa: E402
import implicit.bpr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.data import random_split, read_events  # noqa: E402
from recsys.data.synthetic import synthetic_log  # noqa: E402
from recsys.evaluate import evaluate  # noqa: E402


class Factors:
    """Scores from raw factor matrices, so implicit's own output goes through our evaluator."""

    def __init__(self, users, items):
        self.users, self.items = torch.as_tensor(users), torch.as_tensor(items)

    def score(self, users, items=None):
        return self.users[torch.as_tensor(users)] @ self.items.T


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def implicit_fit(cls, params, matrix):
    with threadpool_limits(1, "blas"):
        model = cls(**params)
        model.fit(matrix, show_progress=False)
    model = model.to_cpu() if hasattr(model, "to_cpu") else model
    return Factors(model.user_factors, model.item_factors)


def compare(name, train, test, repeats):
    rows = []
    ndcg = lambda m: evaluate(m, test, train=train, k=20)["ndcg@20"]  # noqa: E731
    matrix = train.matrix.astype(np.float32)
    als = create_model("als", progress=False)
    bpr = create_model("bpr", progress=False)
    peers = {
        "als": (als, implicit.als.AlternatingLeastSquares, dict(
            factors=als.factors, regularization=als.regularization, alpha=als.alpha,
            iterations=als.iterations, random_state=als.seed)),
        "bpr": (bpr, implicit.bpr.BayesianPersonalizedRanking, dict(
            factors=bpr.factors, learning_rate=bpr.learning_rate, regularization=bpr.regularization,
            iterations=bpr.iterations, random_state=bpr.seed)),
    }
    for model_name, (ours, cls, params) in peers.items():
        peer, peer_t = timed(lambda cls=cls, params=params: implicit_fit(cls, params, matrix), repeats)
        ours_fitted, ours_t = timed(lambda ours=ours: ours.fit(train), repeats)
        rows.append((name, model_name, f"implicit {cls.__name__}", ndcg(ours_fitted), ndcg(peer),
                     ours_t, peer_t))
    peer, peer_t = timed(lambda: implicit_fit(*peers["bpr"][1:], matrix), 1)
    mf, mf_t = timed(lambda: create_model("mf", progress=False).fit(train), 1)
    rows.append((name, "mf", "implicit BPR", ndcg(mf), ndcg(peer), mf_t, peer_t))
    pop = create_model("pop").fit(train)
    rows.append((name, "pop", "-", ndcg(pop), float("nan"), 0.0, float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=60000)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--interactions", type=int, default=1_200_000)
    ap.add_argument("--movielens", type=Path, help="MovieLens-100K folder or .inter/u.data file")
    ap.add_argument("--repeats", type=int, default=3, help="fits per timing (the best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus | torch {torch.__version__} on {device} | "
          f"implicit {implicit.__version__} (gpu={implicit.gpu.HAS_CUDA})")
    sets = []
    start = time.perf_counter()
    log = synthetic_log(args.users, args.items, args.interactions, seed=args.seed)
    data = Interactions.from_frame(log)
    print(f"# generated {data} in {time.perf_counter() - start:.0f}s")
    sets.append(("power-law", data))
    if args.movielens:
        path = args.movielens
        if path.is_dir() and (path / "ml-100k.inter").exists():
            path = path / "ml-100k.inter"
        sets.append(("ml-100k", Interactions.from_frame(read_events(path))))

    rows = []
    for name, data in sets:
        train, test = random_split(data, test_frac=0.2, seed=args.seed)
        rows += compare(name, train, test, args.repeats)

    header = ("data", "model", "peer", "ndcg@20", "peer ndcg@20", "ndcg ratio", "fit s", "peer fit s",
              "time ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, model, peer, nd, pnd, t, pt in rows:
        print(f"| {name} | {model} | {peer} | {nd:.4f} | {pnd:.4f} | {nd / pnd:.3f} | {t:.2f} | "
              f"{pt:.2f} | {t / pt:.3f} |")


if __name__ == "__main__":
    main()
