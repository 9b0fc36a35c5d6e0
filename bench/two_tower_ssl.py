"""Self-supervised feature masking for two-tower retrieval (Yao et al., CIKM 2021).

    python bench/two_tower_ssl.py --data ../shared/data/ml-100k [--seeds 0,1,2] [--device cpu|cuda]
                        [--datasets ml-100k,simulated] [--epochs 100] [--json OUT]

Datasets: MovieLens-100K (every rating is an interaction; item features genres (`class`,
multi-valued) and release year; user features age bucket, gender, occupation) and the
simulator's data (item features genre, tags, popularity band, label; no user features).
Per seed: 10% of the items are held out of training entirely (cold-start items: features,
no interactions); the other pairs are split per user 80/20. Models: `two_tower` with
ssl=none|rfm|cfm and `mf` (BPR) as a reference; every model picks its epoch on a validation
split carved from train and is refitted on all of it.

Metrics: Recall@20 / NDCG@20 over the whole catalogue on the warm test pairs (overall and on
tail items, all but the 20% most popular), and cold-start Recall@20 / NDCG@20: each user's
pairs with cold items (test plus the removed training pairs), ranked among the cold items
only (random ranking: Recall@20 about 20 / number of cold items, printed). Mean and standard
deviation over seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this file's folder leads sys.path and its name would shadow the standard
# library's `ssl` module (imported by pyarrow and others)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.data import read_atomic  # noqa: E402
from recsys.data.features import FeatureTable  # noqa: E402
from recsys.data.simulate import simulate  # noqa: E402
from recsys.data.split import holdout  # noqa: E402
from recsys.evaluate import evaluate  # noqa: E402

K = 20
COLD_FRAC = 0.1
AGE_BUCKETS = [0, 18, 25, 35, 45, 50, 56, 200]  # the MovieLens-1M age groups
MODELS = {
    "mf (bpr)": ("mf", {}),
    "two_tower ssl=none": ("two_tower", {"ssl": "none"}),
    "two_tower ssl=rfm": ("two_tower", {"ssl": "rfm"}),
    "two_tower ssl=cfm": ("two_tower", {"ssl": "cfm"}),
}
COLUMNS = ("ndcg@20", "recall@20", "tail_recall@20", "cold_recall@20", "cold_ndcg@20")


def movielens(folder: Path) -> tuple[Interactions, pd.DataFrame, pd.DataFrame | None, dict]:
    """Interactions, item and user feature frames, and the item file's separators."""
    data = Interactions.from_frame(read_atomic(folder / "ml-100k.inter"))
    items = read_atomic(folder / "ml-100k.item")[["item_id", "class", "release_year"]]
    users = read_atomic(folder / "ml-100k.user")
    age = pd.to_numeric(users["age"])
    users = pd.DataFrame({"user_id": users["user_id"], "gender": users["gender"],
                          "occupation": users["occupation"],
                          "age": pd.cut(age, AGE_BUCKETS, right=False).astype(str)})
    return data, items, users, {"class": " "}


def simulated(seed: int) -> tuple[Interactions, pd.DataFrame, None, dict]:
    sim = simulate(n_users=1000, n_items=500, n_interactions=20000, seed=seed)
    # one log of all clicks (the simulator's test pairs are new pairs); this bench makes its
    # own splits
    data = Interactions(sim.train.matrix + sim.test.matrix, sim.train.user_map, sim.train.item_map)
    return data, sim.item_features, None, {}


def prepare(data: Interactions, items: pd.DataFrame, users: pd.DataFrame | None, seps: dict,
            seed: int):
    """(train with features, warm test, cold test, cold item indices)."""
    rng = np.random.default_rng(seed)
    cold = np.zeros(data.n_items, bool)
    cold[rng.choice(data.n_items, int(round(COLD_FRAC * data.n_items)), replace=False)] = True
    rows, cols = data.coo
    warm = data.with_pairs(rows, cols, ~cold[cols])
    cold_pairs = data.with_pairs(rows, cols, cold[cols])
    train, test = holdout(warm, 0.2, seed=seed)
    trained = train.item_map.to_ids(np.flatnonzero(train.item_popularity > 0))
    table = FeatureTable.from_frame(items, "item_id", ids=train.item_map, fit_ids=trained,
                                    seps=seps, kinds={"release_year": "categorical"}
                                    if "release_year" in items else None)
    train = train.with_item_features(table)
    if users is not None:
        train = train.with_user_features(FeatureTable.from_frame(users, "user_id",
                                                                 ids=train.user_map))
    cold_items = np.flatnonzero(cold)
    return train, test, cold_pairs.subset(items=cold_items), cold_items


class ColdScorer:
    """Scores of a model restricted to the cold items (ranking among them only)."""

    def __init__(self, model, items: np.ndarray) -> None:
        self.model, self.items = model, items

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        return self.model.score(users, self.items if items is None else self.items[items])


def run(name: str, params: dict, train, test, cold_test, cold_items, seed: int, args) -> dict:
    start = time.perf_counter()
    model = create_model(name, **params, seed=seed, device=args.device, progress=False,
                         epochs=args.epochs, valid_every=2, patience=6)
    model.fit(train)
    result = evaluate(model, test, train=train, k=K)
    cold = evaluate(ColdScorer(model, cold_items), cold_test, k=K)
    out = {m: result[m] for m in ("ndcg@20", "recall@20", "tail_recall@20", "tail_ndcg@20")}
    out.update({"cold_recall@20": cold["recall@20"], "cold_ndcg@20": cold["ndcg@20"],
                "epochs": model.fit_info_["best_epoch"], "seconds": time.perf_counter() - start})
    return out


def table_rows(results: dict[str, list[dict]]) -> list[str]:
    lines = ["| model | " + " | ".join(COLUMNS) + " | epochs |", "|---" * (len(COLUMNS) + 2) + "|"]
    for label, runs in results.items():
        cells = []
        for col in COLUMNS:
            values = np.array([r[col] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1
                         else f"{values.mean():.4f}")
        epochs = "/".join(str(r["epochs"]) for r in runs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {epochs} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/ml-100k"))
    ap.add_argument("--datasets", default="ml-100k,simulated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS), help="labels of MODELS to run")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="write the per-seed results here")
    args = ap.parse_args()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus | torch {torch.__version__} on {device}")
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = [m.strip() for m in args.models.split(",")]
    everything = {}
    for dataset in args.datasets.split(","):
        results: dict[str, list[dict]] = {label: [] for label in labels}
        for seed in seeds:
            loaded = movielens(args.data) if dataset == "ml-100k" else simulated(seed)
            train, test, cold_test, cold_items = prepare(*loaded, seed=seed)
            for label in labels:
                name, params = MODELS[label]
                out = run(name, params, train, test, cold_test, cold_items, seed, args)
                results[label].append(out)
                print(f"{dataset} seed {seed} {label}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in out.items()), flush=True)
        print(f"\n## {dataset}: {train.n_users} users, {train.n_items} items "
              f"({len(cold_items)} cold; random cold Recall@20 ~ {K / len(cold_items):.3f}), "
              f"seeds {args.seeds}")
        print("\n".join(table_rows(results)) + "\n", flush=True)
        everything[dataset] = results
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
