"""Self-supervised feature masking for two-tower retrieval (Yao et al., CIKM 2021).

    python bench/two_tower_ssl.py --data ../shared/data/ml-100k [--seeds 0,1,2] [--device cpu|cuda]
                        [--datasets ml-100k,simulated] [--epochs 100] [--json OUT]
                        [--title-words] [--title-vectors NPY] [--train-share 0.25]
                        [--select ml-100k --select-seeds 0,1,2 --alphas 0.05,0.2,1
                         --ssl-temperatures 0.1,0.5 --ssl-dropouts 0.1,0.3]
                        [--simulated-seeds 0,1,2] [--jobs N --devices cuda:0,cuda:1]
                        [--csv FILE] [--stop-after SECONDS] [--summarize CSV ...]

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
deviation over seeds; `tail50_recall@20` takes the tail as all but the 50% most popular items
(the long tail proper); the CSV also has `tail_share@20` (the share of tail items among the
recommendations) and `ssl_infonce` (the SSL loss of the last epoch, without alpha). SSL
variants are also compared with ssl=none seed by seed (the same split and cold items): the
mean and spread of the paired difference and how many seeds it is positive on.

With `--select DATASETS`, SSL hyperparameters are chosen on validation only: for each selection
seed, a further 20% of each user's training pairs is held out (the test split is never
read); every rfm/cfm combination of `--alphas` x `--ssl-temperatures` x `--ssl-dropouts`
(value dropout in multi-valued features) is trained on the rest and scored on that
validation split; per method the combination with the best mean validation `--select-by`
(default tail Recall@20) over the selection seeds is then trained and tested on `--seeds`
next to the defaults. Cells run in `--jobs` processes (devices in turn from `--devices`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from cells import parse_model, run_cells  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.data import read_atomic  # noqa: E402
from recsys.data.features import FeatureTable  # noqa: E402
from recsys.data.simulate import simulate  # noqa: E402
from recsys.data.split import holdout  # noqa: E402
from recsys.evaluate import evaluate  # noqa: E402
from recsys.models.base import get_model_class  # noqa: E402

K = 20
COLD_FRAC = 0.1
AGE_BUCKETS = [0, 18, 25, 35, 45, 50, 56, 200]  # the MovieLens-1M age groups
MODELS = {
    "mf (bpr)": ("mf", {}),
    "two_tower ssl=none": ("two_tower", {"ssl": "none"}),
    "two_tower ssl=rfm": ("two_tower", {"ssl": "rfm"}),
    "two_tower ssl=cfm": ("two_tower", {"ssl": "cfm"}),
    # ablation (not run by default): without id dropout, ssl=none has no other way to train
    # the item tower's feature path apart from the ids
    "two_tower ssl=none [id_dropout=0]": ("two_tower", {"ssl": "none", "id_dropout": 0.0}),
    "two_tower ssl=rfm [id_dropout=0]": ("two_tower", {"ssl": "rfm", "id_dropout": 0.0}),
}
DEFAULT_MODELS = list(MODELS)[:4]
COLUMNS = ("ndcg@20", "recall@20", "tail_recall@20", "tail50_recall@20", "tail_share@20",
           "cold_recall@20", "cold_ndcg@20")
VALID_COLUMNS = ("ndcg@20", "tail_recall@20", "tail50_recall@20")
VALID_SEED = 1000  # the validation carve-out's seed is the split seed + this
SHARE_SEED = 2000  # the seed of `--train-share`'s subsample is the split seed + this


def title_vectors(items: pd.DataFrame, file: Path) -> np.ndarray:
    """Sentence vectors (all-MiniLM-L6-v2, unit length) of the items' titles, one row per row
    of `items`; computed once and kept in `file` (.npy), so that a machine without the encoder
    reads them from there."""
    if file.is_file():
        vectors = np.load(file)
        if len(vectors) != len(items):
            raise SystemExit(f"{file}: {len(vectors)} vectors for {len(items)} items")
        return vectors
    from recsys.augment.text import TextEncoder

    vectors = TextEncoder(device="cpu").encode(items["movie_title"].astype(str).tolist())
    np.save(file, vectors)
    return vectors


def movielens(folder: Path, title_words: bool = False, title_vecs: Path | None = None
              ) -> tuple[Interactions, pd.DataFrame, pd.DataFrame | None, dict]:
    """Interactions, item and user feature frames, and the item file's separators. With
    `title_words` the items also get the lower-cased words of their titles (multi-valued); with
    `title_vecs` the sentence vectors of their titles (dense, `title_vectors`)."""
    data = Interactions.from_frame(read_atomic(folder / "ml-100k.inter"))
    items = read_atomic(folder / "ml-100k.item")
    columns, seps = ["item_id", "class", "release_year"], {"class": " "}
    if title_vecs is not None:
        items = items.assign(title_vec=list(title_vectors(items, title_vecs)))
        columns.append("title_vec")
    if title_words:
        words = items["movie_title"].astype(str).str.lower().str.findall(r"[a-z0-9']+")
        items = items.assign(title=words.str.join(" "))
        columns.append("title")
        seps["title"] = " "
    items = items[columns]
    users = read_atomic(folder / "ml-100k.user")
    age = pd.to_numeric(users["age"])
    users = pd.DataFrame({"user_id": users["user_id"], "gender": users["gender"],
                          "occupation": users["occupation"],
                          "age": pd.cut(age, AGE_BUCKETS, right=False).astype(str)})
    return data, items, users, seps


def simulated(seed: int) -> tuple[Interactions, pd.DataFrame, None, dict]:
    sim = simulate(n_users=1000, n_items=500, n_interactions=20000, seed=seed)
    # one log of all clicks (the simulator's test pairs are new pairs); this bench makes its
    # own splits
    data = Interactions(sim.train.matrix + sim.test.matrix, sim.train.user_map, sim.train.item_map)
    return data, sim.item_features, None, {}


def prepare(data: Interactions, items: pd.DataFrame, users: pd.DataFrame | None, seps: dict,
            seed: int, train_share: float = 1.0):
    """(train with features, warm test, cold test, cold item indices). With `train_share` < 1
    only that share of each user's training pairs is kept (the test split is unchanged): the
    paper's question of how SSL fares as training data gets scarce."""
    rng = np.random.default_rng(seed)
    cold = np.zeros(data.n_items, bool)
    cold[rng.choice(data.n_items, int(round(COLD_FRAC * data.n_items)), replace=False)] = True
    rows, cols = data.coo
    warm = data.with_pairs(rows, cols, ~cold[cols])
    cold_pairs = data.with_pairs(rows, cols, cold[cols])
    train, test = holdout(warm, 0.2, seed=seed)
    if train_share < 1:
        train = holdout(train, 1 - train_share, seed=seed + SHARE_SEED).train
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


@lru_cache(maxsize=4)
def load(dataset: str, seed: int, folder: Path, title_words: bool = False,
         title_vecs: Path | None = None, train_share: float = 1.0):
    """prepare() of a data set and seed (once per process)."""
    source = (movielens(folder, title_words, title_vecs) if dataset == "ml-100k"
              else simulated(seed))
    return prepare(*source, seed=seed, train_share=train_share)


def loaded(dataset: str, seed: int, args):
    return load(dataset, seed, args.data, args.title_words, args.title_vectors, args.train_share)


def run(phase: str, dataset: str, seed: int, label: str, name: str, params: dict, device: str,
        args) -> dict:
    """One fit. phase "valid": trained on the training pairs less a per-user 20% validation
    carve-out and scored on it (cold items and test untouched); "test": trained on all
    training pairs and scored on test and the cold items."""
    row = {"phase": phase, "dataset": dataset, "seed": seed, "label": label, "model": name,
           "params": json.dumps(params, sort_keys=True), "device": device}
    if args.stop_at and time.time() > args.stop_at:
        return {**row, "skipped": 1}
    torch.set_num_threads(args.threads)
    train, test, cold_test, cold_items = loaded(dataset, seed, args)
    if phase == "valid":
        train, test = holdout(train, 0.2, seed=seed + VALID_SEED)
    start = time.perf_counter()
    settings = {"seed": seed, "device": device, "progress": False, "epochs": args.epochs,
                "valid_every": 2, "patience": 6}
    model = create_model(name, **(settings | params))  # a model's own settings win
    model.fit(train)
    result = evaluate(model, test, train=train, k=K)
    deep = evaluate(model, test, train=train, k=K, head_frac=0.5)
    row.update({m: result[m] for m in ("ndcg@20", "recall@20", "tail_recall@20", "tail_ndcg@20",
                                       "tail_share@20")})
    row["tail50_recall@20"] = deep["tail_recall@20"]
    if phase == "test":
        cold = evaluate(ColdScorer(model, cold_items), cold_test, k=K)
        row.update({"cold_recall@20": cold["recall@20"], "cold_ndcg@20": cold["ndcg@20"]})
    last = model.history_[-1]  # the last epoch (of the refit, whose parts carry "refit_")
    ssl = [v for k, v in last.items() if k.removeprefix("refit_") == "ssl"]
    if ssl:  # the InfoNCE value itself (the logged part is alpha x it)
        row["ssl_infonce"] = ssl[0] / model.alpha
    row.update({"epochs": model.fit_info_["best_epoch"], "seconds": time.perf_counter() - start})
    return row


def grid(args) -> dict[str, tuple[str, dict]]:
    """The rfm/cfm combinations searched on validation, by label."""
    out = {"two_tower ssl=none": ("two_tower", {"ssl": "none"})}
    for ssl, alpha, tau, drop in itertools.product(
            ("rfm", "cfm"), floats(args.alphas), floats(args.ssl_temperatures),
            floats(args.ssl_dropouts)):
        out[f"two_tower ssl={ssl} alpha={alpha:g} tau={tau:g} drop={drop:g}"] = (
            "two_tower", {"ssl": ssl, "alpha": alpha, "ssl_temperature": tau, "ssl_dropout": drop})
    return out


def filled(name: str, params: dict) -> dict:
    """`params` with the model's defaults for the parameters not given (to spot a selected
    combination that is the default one)."""
    return {f.name: params.get(f.name, f.default) for f in dataclasses.fields(get_model_class(name))}


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def select(rows: pd.DataFrame, metric: str) -> dict[str, str]:
    """Per SSL method, the label with the best mean validation `metric` over seeds."""
    means = rows.groupby("label", sort=False)[metric].mean()
    best = {}
    for ssl in ("rfm", "cfm"):
        own = means[[label.startswith(f"two_tower ssl={ssl} ") for label in means.index]]
        if len(own):
            best[ssl] = own.idxmax()
    return best


def summary(rows: pd.DataFrame, columns) -> list[str]:
    """Mean ± sd over seeds per label (in first-seen order) of the `columns` the rows have."""
    columns = [c for c in columns if c in rows]
    lines = ["| model | " + " | ".join(columns) + " | epochs |", "|---" * (len(columns) + 2) + "|"]
    for label, group in rows.groupby("label", sort=False):
        cells = ["–" if group[c].isna().all()  # a column earlier runs did not write
                 else f"{group[c].mean():.4f} ± {group[c].std(ddof=0):.4f}" if len(group) > 1
                 else f"{group[c].mean():.4f}" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + "/".join(str(int(e)) for e in group["epochs"]) + " |")
    return lines


def paired(rows: pd.DataFrame, metrics=("tail_recall@20", "tail50_recall@20", "ndcg@20")) -> list[str]:
    """Each SSL label minus ssl=none on the same seed: mean ± sd of the difference, and on how
    many seeds it is positive. A label ending in a bracketed variant ("... [id_dropout=0]") is
    compared with the ssl=none of the same variant."""
    lines = ["| vs ssl=none | " + " | ".join(f"Δ {m} (seeds > 0)" for m in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for label, group in rows.groupby("label", sort=False):
        if "ssl=none" in label or not label.startswith("two_tower"):
            continue
        variant = label[label.rindex(" ["):] if label.endswith("]") else ""
        base = "two_tower ssl=none" + variant
        base = rows[rows["label"] == base].set_index("seed")
        group = group.set_index("seed")
        seeds = group.index.intersection(base.index)
        if not len(seeds):
            continue
        cells = []
        for m in metrics:
            diff = (group.loc[seeds, m] - base.loc[seeds, m]).to_numpy()
            cells.append(f"{diff.mean():+.4f} ± {diff.std(ddof=0):.4f} ({(diff > 0).sum()}/{len(diff)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def report(rows: pd.DataFrame, datasets: list[str], args) -> dict[str, list[dict]]:
    """Print the test tables (per data set: the summary over seeds, the paired differences
    against ssl=none); return the test rows by data set."""
    out = {}
    if "skipped" in rows:
        rows = rows[rows["skipped"] != 1]
    for dataset in datasets:
        done = rows[(rows["dataset"] == dataset) & (rows["phase"] == "test")]
        if done.empty:
            continue
        train, _, _, cold_items = loaded(dataset, int(done["seed"].iloc[0]), args)
        print(f"\n## {dataset}: {train.n_users} users, {train.n_items} items "
              f"({len(cold_items)} cold; random cold Recall@20 ~ {K / len(cold_items):.3f}), "
              f"test seeds {sorted(done['seed'].unique().tolist())}")
        print("\n".join(summary(done, COLUMNS)) + "\n")
        print("\n".join(paired(done)) + "\n", flush=True)
        out[dataset] = done.to_dict("records")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/ml-100k"))
    ap.add_argument("--title-words", action="store_true",
                    help="MovieLens items also get the words of their titles as a feature")
    ap.add_argument("--title-vectors", type=Path, metavar="NPY",
                    help="MovieLens items also get sentence vectors of their titles (dense), "
                         "read from NPY or computed into it (needs the [text] extra)")
    ap.add_argument("--train-share", type=float, default=1.0,
                    help="keep this share of each user's training pairs (test unchanged)")
    ap.add_argument("--datasets", default="ml-100k,simulated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--simulated-seeds", help="seeds of the simulated data set (default: --seeds)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="labels of MODELS to run")
    ap.add_argument("--model", action="append", type=parse_model, default=[],
                    metavar="LABEL=NAME:key=value,...",
                    help="a further model to test (repeat), e.g. a combination selected earlier")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--devices", help="cells take these devices in turn (default: --device)")
    ap.add_argument("--jobs", type=int, default=1, help="fit this many models at once, in processes")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    ap.add_argument("--select", default="", help="data sets whose SSL settings are chosen on validation")
    ap.add_argument("--select-seeds", default="0,1,2")
    ap.add_argument("--select-by", default="tail_recall@20", choices=VALID_COLUMNS)
    ap.add_argument("--alphas", default="0.05,0.2,1")
    ap.add_argument("--ssl-temperatures", default="0.1,0.5")
    ap.add_argument("--ssl-dropouts", default="0.1,0.3")
    ap.add_argument("--stop-after", type=float, default=0,
                    help="start no fit after this many seconds (0: no limit)")
    ap.add_argument("--csv", type=Path, help="write every finished fit's row here")
    ap.add_argument("--json", type=Path, help="write the per-seed results here")
    ap.add_argument("--summarize", nargs="+", type=Path, metavar="CSV",
                    help="print the test tables of earlier runs' CSV files (together)")
    args = ap.parse_args()
    if args.summarize:
        report(pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True),
               args.datasets.split(","), args)
        return
    args.stop_at = time.time() + args.stop_after if args.stop_after else 0
    devices = (args.devices or args.device).split(",")
    where = torch.cuda.get_device_name() if devices[0].startswith("cuda") else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus | torch {torch.__version__} on {where} "
          f"x{len(devices)} | {args.jobs} jobs", flush=True)
    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    datasets = args.datasets.split(",")
    selecting = [d for d in args.select.split(",") if d]
    rows: list[dict] = []

    def keep(row: dict) -> None:
        rows.append(row)
        if not row.get("skipped"):
            print(f"{row['phase']} {row['dataset']} seed {row['seed']} {row['label']}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)), flush=True)
        if args.csv:  # after every fit, so a cut-short run keeps what it finished
            pd.DataFrame(rows).to_csv(f"{args.csv}.tmp", index=False)
            os.replace(f"{args.csv}.tmp", args.csv)

    def cells(phase: str, dataset: str, seeds: list[int], models: dict) -> list[tuple]:
        return [(phase, dataset, seed, label, name, params)
                for seed in seeds for label, (name, params) in models.items()]

    def on_devices(todo: list[tuple]) -> list[tuple]:
        return [(*cell, devices[i % len(devices)]) for i, cell in enumerate(todo)]

    searched = grid(args)
    todo = [c for d in selecting for c in cells("valid", d, ints(args.select_seeds), searched)]
    run_cells(run, on_devices(todo), args, args.jobs, keep)
    chosen: dict[str, dict] = {}
    for dataset in selecting:
        done = pd.DataFrame([r for r in rows if r["dataset"] == dataset and not r.get("skipped")])
        if done.empty:
            continue
        print(f"\n## {dataset}: validation (seeds {args.select_seeds}; a 20% per-user carve-out "
              f"of the training pairs), selected by {args.select_by}")
        print("\n".join(summary(done, VALID_COLUMNS)) + "\n")
        extra = {}
        for ssl, label in select(done, args.select_by).items():
            print(f"selected for ssl={ssl}: {label}")
            extra[f"{label} (selected)"] = searched[label]
        chosen[dataset] = extra
    todo = []
    for dataset in datasets:
        seeds = ints(args.simulated_seeds or args.seeds) if dataset == "simulated" else ints(args.seeds)
        models = {label: MODELS[label] for label in labels} | dict(args.model)
        for label, (name, params) in chosen.get(dataset, {}).items():
            if (name, filled(name, params)) not in [(n, filled(n, p)) for n, p in models.values()]:
                models[label] = (name, params)
        todo += cells("test", dataset, seeds, models)
    run_cells(run, on_devices(todo), args, args.jobs, keep)
    everything = report(pd.DataFrame(rows), datasets, args)
    skipped = sum(1 for r in rows if r.get("skipped"))
    if skipped:
        print(f"{skipped} fits skipped after --stop-after {args.stop_after:g} s")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
