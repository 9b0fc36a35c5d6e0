"""Unbiased learning on semi-synthetic MNAR data: naive MF vs Rel-MF vs clipped Rel-MF vs UBPR.

    python bench/mnar.py [--biases 0.5,1.0,1.5] [--seeds 0,1,2] [--users 3000 --items 1500
                         --interactions 40000] [--model "LABEL=NAME:key=value,..." ...]
    python bench/mnar.py --movielens ../shared/data/ml-100k [--powers 1,2,3] ...
    ... [--tune 20 [--timeout S] [--folds K] [--metric snips_recall@20 | default]] [--references]

Two simulators. By default recsys.data.simulate: latent-factor relevance, Zipf exposure of
strength `--biases`. With `--movielens`, Saito et al.'s recipe (recsys.data.semisynthetic):
relevance from an MF fit to the MovieLens-100K ratings, exposure from a logistic MF fit to
the rated/not-rated indicator raised to each power in `--powers`. Each cell (strength, seed,
model) trains on the biased training clicks and is scored on the uniformly exposed test set:
DCG@3, DCG@5, Recall@5 and MAP@5, overall and with only rare items (outside the 20% most
clicked) counted as relevant; the table gives mean +- standard deviation over seeds, then the
per-seed DCG@5 of every model against the first one. The test labels are single draws; the
simulators know each label's expectation and the relevance gamma, so `exp_dcg@K` (gain: the
expected label, E[R | not clicked]) and `rel_dcg@K` (gain: gamma) rank the same candidates
without the draws' noise. `--references` adds fixed rankings built from the truth (gamma,
theta * gamma, item popularity, IPS-weighted popularity with the true theta).

With `--tune N`, every model is tuned the same way before it is scored (pipelines/tune.py):
N trials (or `--timeout` seconds) of its search space, each validated on a split of the
training clicks by `--metric` (default SNIPS recall@20, the same propensities for every
model: from item popularity, or `--valid-propensity true`, the true exposure floored at 0.01;
`--metric default`: each model's own, as `tune:` in compare configs), the best refitted on
all training clicks. The test set is never seen. A `true_propensity` model trains on the
true exposure (its popularity `eta` is then not searched).
"""

from __future__ import annotations

import argparse
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cells import parse_model as parse_bench_model
from cells import run_cells

from recsys import create_model
from recsys.models.base import get_model_class

MODELS = {
    "naive MF (bce)": ("mf", {"loss": "bce"}),
    "Rel-MF (no clip)": ("relmf", {"clip": 0.0}),
    "Rel-MF clipped": ("relmf", {}),
    "UBPR": ("ubpr", {}),
}
TUNED_MODELS = {"naive MF (bce)": ("mf", {"loss": "bce"}), "Rel-MF": ("relmf", {})}
METRICS = ["dcg@3", "dcg@5", "recall@5", "map@5"]
# the same DCGs with each candidate's expected label as its gain ("exp": the expectation over
# the draws of relevance and exposure, without their noise) and with its relevance
# probability gamma ("rel"); CandidateSet.expected
EXPECTED = {"exp": "label", "rel": "relevance"}
EXPECTED_METRICS = [f"{p}{k}_dcg@{n}" for p in ("", "rare_") for k in EXPECTED for n in (3, 5)]
TRUE_PROPENSITY = "true_propensity"


def parse_model(spec: str) -> tuple[str, tuple[str, dict]]:
    """'Rel-MF lr 5e-4=relmf:lr=0.0005,epochs=600' -> (label, (registry name, params)).

    The pseudo-parameter `true_propensity` trains on the simulator's true exposure propensities
    instead of ones estimated from item popularity."""
    return parse_bench_model(spec, flags=(TRUE_PROPENSITY,))


@lru_cache(maxsize=1)
def _movielens(path: str):
    """The ratings, and the relevance and exposure fits on them (once per process)."""
    from recsys import Interactions
    from recsys.data import read_events
    from recsys.data.semisynthetic import exposure_probability, relevance_probability

    file = Path(path)
    if file.is_dir():
        file = next(iter(sorted(file.glob("*.inter")) or [file / "u.data"]))
    ratings = Interactions.from_frame(read_events(file), rating_col="rating")
    return ratings, relevance_probability(ratings), exposure_probability(ratings)


@lru_cache(maxsize=1)
def simulated(strength: float, seed: int, args_key: tuple):
    """(train, unbiased test, true propensity, gamma: users x items) of one simulator cell."""
    movielens, users, items, interactions = args_key
    if movielens:
        from recsys.data.semisynthetic import semisynthetic

        ratings, gamma, exposure = _movielens(movielens)
        sim = semisynthetic(ratings, strength, relevance=gamma, exposure=exposure, seed=seed)
        return sim.train, sim.unbiased_test, sim.propensity, gamma
    from recsys.data.simulate import simulate

    sim = simulate(users, items, interactions, popularity_bias=strength, seed=seed)
    u, i = np.divmod(np.arange(users * items), items)
    gamma = sim.relevance_probability(u, i).numpy().reshape(users, items)
    return sim.train, sim.unbiased_test, sim.train_propensity, gamma


# Fixed rankings that need the simulator's truth, beside the models (`--references`): the
# relevance gamma, the expected test label, theta * gamma (the click probability, what naive
# pointwise learning converges to), clicks per item, and clicks per item weighted by the
# true 1 / max(theta, M) (an item-level Rel-MF with exact propensities)
REFERENCE = "reference"
REFERENCES = ("gamma", "expected label", "theta*gamma", "popularity", "IPS popularity M=0.01",
              "IPS popularity M=0.1")


class _Fixed:
    """A scorer of a dense users x items (or 1 x items) score matrix."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))

    def score(self, users, items=None) -> torch.Tensor:
        rows = torch.as_tensor(users)
        return self.scores[rows if len(self.scores) > 1 else torch.zeros_like(rows)]


def reference_scores(rank_by: str, train, propensity, gamma: np.ndarray) -> np.ndarray:
    from recsys.data.simulate import expected_labels

    n_users, n_items = gamma.shape
    u, i = np.divmod(np.arange(n_users * n_items), n_items)
    theta = propensity(torch.from_numpy(u), torch.from_numpy(i)).double().numpy().reshape(gamma.shape)
    clicks = train.matrix.toarray() > 0
    if rank_by.startswith("IPS popularity M="):
        floor = float(rank_by.rpartition("=")[2])
        return (clicks / np.maximum(theta, floor)).sum(0, keepdims=True)
    return {"gamma": lambda: gamma, "expected label": lambda: expected_labels(gamma, theta),
            "theta*gamma": lambda: theta * gamma,
            "popularity": lambda: clicks.sum(0, keepdims=True)}[rank_by]()


def run(strength: float, seed: int, label: str, name: str, params: dict, args) -> dict:
    """Fit (or tune) one model on one simulated data set; its unbiased-test metrics."""
    if args.jobs > 1:
        torch.set_num_threads(1)
    train, test, true_propensity, gamma = simulated(strength, seed, _args_key(args))
    clicks = train.item_popularity
    rare = clicks < np.quantile(clicks, 0.8)
    if name == REFERENCE:
        return _scored(_Fixed(reference_scores(params["rank_by"], train, true_propensity, gamma)),
                       test, rare, strength, seed, label, 0.0, train.nnz, {}, args)
    known = get_model_class(name).param_defaults()
    params = {**{k: v for k, v in {"progress": False, "seed": seed, "device": args.device}.items()
                 if k in known}, **params}
    if params.pop(TRUE_PROPENSITY, False):
        train = train.with_propensity(true_propensity)
        if "eta" in known:  # eta shapes popularity propensities only: nothing to search
            params.setdefault("eta", known["eta"])
    start = time.perf_counter()
    extra = {}
    if args.tune and get_model_class(name).search_space:  # pop: nothing to tune
        from pipelines.tune import VALID_CLIP, VALID_ETA, tune
        from recsys.data.propensity import item_propensity

        result = tune(name, train, fixed=params, trials=args.tune, timeout=args.timeout,
                      metric=None if args.metric == "default" else args.metric, seed=seed,
                      folds=args.folds, progress=False,
                      propensity=true_propensity.with_clip(VALID_CLIP) if args.valid_propensity == "true"
                      else item_propensity(clicks, VALID_ETA, clip=VALID_CLIP))
        model = result.model
        extra = {"valid": result.value, **{f"best.{k}": v for k, v in result.best_params.items()}}
    else:
        model = create_model(name, **params).fit(train)
    return _scored(model, test, rare, strength, seed, label, time.perf_counter() - start, train.nnz,
                   extra, args)


def _scored(model, test, rare, strength, seed, label, seconds, clicks, extra, args) -> dict:
    from recsys.evaluate.unbiased import candidate_metrics

    metrics = candidate_metrics(model, test, k=(3, 5), rare_items=rare)
    for key, of in EXPECTED.items():
        expected = candidate_metrics(model, test.expected(of), k=(3, 5), rare_items=rare)
        metrics.update({f"{p}{key}_dcg@{n}": expected[f"{p}dcg@{n}"] for p in ("", "rare_")
                        for n in (3, 5)})
    print(f"{_key(args)} {strength} seed {seed} {label:16s} dcg@5 {metrics['dcg@5']:.4f} "
          f"exp {metrics['exp_dcg@5']:.4f} rel {metrics['rel_dcg@5']:.4f} "
          f"rare {metrics['rare_dcg@5']:.4f} ({seconds:.0f}s)", flush=True)
    return {_key(args): strength, "seed": seed, "model": label, "fit_s": seconds, "clicks": clicks,
            **{m: metrics[m] for m in METRICS}, **{f"rare_{m}": metrics[f"rare_{m}"] for m in METRICS},
            **{m: metrics[m] for m in EXPECTED_METRICS}, **extra}


def _key(args) -> str:
    return "power" if args.movielens else "bias"


def _args_key(args) -> tuple:
    return (str(args.movielens or ""), args.users, args.items, args.interactions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--biases", default="0.5,1.0,1.5", help="exposure strengths of the simulator")
    ap.add_argument("--movielens", help="MovieLens-100K folder or .inter/u.data file: Saito et al.'s "
                    "semi-synthetic recipe instead of the simulator")
    ap.add_argument("--powers", default="1,2,3", help="exposure powers p of the MovieLens recipe")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--interactions", type=int, default=40_000)
    ap.add_argument("--model", action="append", type=parse_model, metavar="LABEL=NAME:key=value,...",
                    help="a model to compare (repeat; default: naive MF, Rel-MF, clipped Rel-MF, UBPR; "
                    "with --tune: naive MF and Rel-MF)")
    ap.add_argument("--references", action="store_true", help="also score fixed rankings that need "
                    "the simulator's truth: " + ", ".join(REFERENCES))
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="tune every model with this many trials on validation first")
    ap.add_argument("--timeout", type=float, help="with --tune: seconds per study")
    ap.add_argument("--folds", type=int, default=1,
                    help="with --tune: validation splits per trial (the score is their mean)")
    ap.add_argument("--metric", default="snips_recall@20", help="with --tune: the validation metric "
                    "of every model (default snips_recall@20; 'default': each model's own, NDCG@20 "
                    "for biased losses and SNIPS recall@20 for unbiased ones, as `tune:` in "
                    "compare configs)")
    ap.add_argument("--valid-propensity", choices=["popularity", "true"], default="popularity",
                    help="with --tune: SNIPS weights of every model's validation clicks, from item "
                    "popularity (as in practice, the default) or the simulator's true exposure")
    ap.add_argument("--device", default="auto", help="torch device for the mf models")
    ap.add_argument("--jobs", type=int, default=1, help="fit this many models at once, in processes "
                    "of one thread each")
    ap.add_argument("--csv", help="also write the per-run rows here (each as it finishes)")
    ap.add_argument("--summarize", nargs="+", metavar="CSV",
                    help="print the table of earlier runs' CSV files (e.g. seeds run in parallel)")
    args = ap.parse_args()
    if args.summarize:
        summarize(pd.concat([pd.read_csv(p) for p in args.summarize], ignore_index=True))
        return
    models = dict(args.model) if args.model else (TUNED_MODELS if args.tune else MODELS)
    if args.references:
        models.update({f"[{r}]": (REFERENCE, {"rank_by": r}) for r in REFERENCES})
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__} on {device}")
    strengths = args.powers if args.movielens else args.biases
    cells = [(s, seed, label, name, params) for s in map(float, strengths.split(","))
             for seed in map(int, args.seeds.split(",")) for label, (name, params) in models.items()]
    frame = pd.DataFrame(run_cells(run, cells, args, args.jobs, keep=_appender(args.csv)))
    if args.csv:
        frame.to_csv(args.csv, index=False)
        Path(f"{args.csv}.partial").unlink(missing_ok=True)
    summarize(frame)


def _appender(path: str | None):
    """Rewrites `path`.partial with the rows finished so far, after each one (a cut-short run
    keeps them; rows of tuned models differ in their best.* columns, so each write has all
    rows); the complete file is written in cell order at the end."""
    if not path:
        return None
    from recsys.atomic import write_text

    partial, rows = Path(f"{path}.partial"), []

    def keep(row: dict) -> None:
        rows.append(row)
        write_text(partial, pd.DataFrame(rows).to_csv(index=False))

    return keep


def summarize(frame: pd.DataFrame) -> None:
    """Mean +- std over seeds per (strength, model), then each model's per-seed DCG@5 and
    rare DCG@5 against the first model's."""
    key = "power" if "power" in frame else "bias"
    cols = METRICS + [f"rare_{m}" for m in METRICS]
    cols += [c for c in EXPECTED_METRICS if c in frame]
    summary = frame.groupby([key, "model"], sort=False)[cols].agg(["mean", "std"])
    print(f"| {key} | model | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (strength, model), row in summary.iterrows():
        cells = [f"{row[(c, 'mean')]:.4f} ± {row[(c, 'std')]:.4f}" for c in cols]
        print(f"| {strength} | {model} | " + " | ".join(cells) + " |")
    models = list(dict.fromkeys(frame["model"]))
    base = models[0]
    seeds = sorted(frame["seed"].unique())
    shown = [m for m in ("dcg@5", "exp_dcg@5", "rel_dcg@5", "rare_dcg@5") if m in frame]
    print(f"\n{' / '.join(shown)} per seed, each model vs {base}:\n")
    print(f"| {key} | model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|---|" + "---|" * len(seeds))
    cell = frame.set_index([key, "model", "seed"])
    for strength in dict.fromkeys(frame[key]):
        for model in models[1:]:
            parts = []
            for s in seeds:
                a, b = cell.loc[(strength, model, s)], cell.loc[(strength, base, s)]
                parts.append(" / ".join(f"{a[m]:.3f} vs {b[m]:.3f}" for m in shown))
            print(f"| {strength} | {model} | " + " | ".join(parts) + " |")


if __name__ == "__main__":
    main()
