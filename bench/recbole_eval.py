"""recsys's full-ranking evaluation against RecBole's full-sort evaluation of the same model.

    python bench/recbole_eval.py --python /tmp/rb/bin/python [--movielens ../shared/data/ml-100k]
        [--generated 50000,10000,1000000] [--factors 64] [--repeats 3]
        [--batches 4096,4194304] [--threads 1] [--json FILE]

One data set at a time (MovieLens-100K, every rating an interaction, and optionally a
generated power-law log of USERS,ITEMS,INTERACTIONS), split per user 80/20 at random
(`holdout`, seed 0). One matrix-factorisation model of `--factors` random dimensions is
evaluated by both: recsys's `evaluate` (an `mf` model with these factors; NDCG@20,
Recall@20 and its other metrics, training items masked) and RecBole's `Trainer.evaluate`
(a BPR model whose embeddings are set to the same factors; `eval_args: {mode: full}`, NDCG@20,
Recall@20, training items masked) on the same users, items and test pairs (RecBole reads the
split as its benchmark files train / valid / test; the valid file repeats 100 training pairs,
so the items it masks at test time are exactly the training items). Data loading is outside
both timings; each is the best of `--repeats` (a shared machine). RecBole runs in its own
python (`--python`, or $RECBOLE_PYTHON: a separate virtualenv with recbole and the same
torch), once per `eval_batch_size` in `--batches` (its default is 4096 scores a batch, i.e.
4096 // items users). Without a RecBole python the bench says so and exits 0.

NDCG@20 must agree (same factors, same definition; ties may differ). Recall differs by
definition: recsys divides hits by min(20, |test items|), RecBole by |test items|.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from eval_floor import random_factor_model

from recsys import Interactions
from recsys.data import read_events
from recsys.data.split import holdout
from recsys.data.synthetic import synthetic_log
from recsys.evaluate import evaluate

CHILD = Path(__file__).with_name("_recbole_eval_child.py")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def recbole_python(path: str | None) -> tuple[str | None, str]:
    """(the python, "") if `path` runs and imports recbole, else (None, why not)."""
    if not path:
        return None, "no RecBole python given (--python or $RECBOLE_PYTHON)"
    if not Path(path).is_file():
        return None, f"{path}: no such file"
    check = subprocess.run([path, "-c", "import recbole"], capture_output=True, text=True)
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{path} cannot import recbole ({last})"
    return path, ""


def datasets(args) -> list[tuple[str, Interactions]]:
    out = []
    if args.movielens:
        path = Path(args.movielens)
        path = path / "ml-100k.inter" if path.is_dir() else path
        out.append(("ml-100k", Interactions.from_frame(read_events(path))))
    for spec in filter(None, (args.generated or "").split(";")):
        users, items, n = map(int, spec.split(","))
        out.append((f"generated {n:,}", Interactions.from_frame(
            synthetic_log(users, items, n, seed=0))))
    return out


def write_benchmark(root: Path, train: Interactions, test: Interactions) -> None:
    """RecBole atomic files root/bench/bench.{train,valid,test}.inter of the split."""
    folder = root / "bench"
    folder.mkdir(parents=True)

    def frame(data: Interactions, rows: slice = slice(None)) -> pd.DataFrame:
        users, items = (a[rows] for a in data.coo)
        return pd.DataFrame({"user_id:token": data.user_map.to_ids(users).astype(str),
                             "item_id:token": data.item_map.to_ids(items).astype(str)})

    frame(train).to_csv(folder / "bench.train.inter", sep="\t", index=False)
    frame(train, slice(0, 100)).to_csv(folder / "bench.valid.inter", sep="\t", index=False)
    frame(test).to_csv(folder / "bench.test.inter", sep="\t", index=False)


def time_recsys(model, train: Interactions, test: Interactions, repeats: int) -> tuple[float, dict]:
    times, metrics = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = evaluate(model, test, train=train, k=20)
        times.append(time.perf_counter() - start)
    return min(times), metrics


def run_recbole(python: str, root: Path, model, train: Interactions, test: Interactions,
                args) -> dict:
    """RecBole's evaluation of `model`'s factors on the split (the JSON of the child)."""
    write_benchmark(root, train, test)
    np.savez(root / "factors.npz", users=model.user_factors().numpy(),
             items=model.item_factors().numpy(), user_ids=train.user_map.ids.astype(str),
             item_ids=train.item_map.ids.astype(str))
    cmd = [python, str(CHILD), str(root), "bench", str(root / "factors.npz"), args.batches,
           str(args.repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root,
                          env={**os.environ, **ONE_THREAD, "PYTHONPATH": ""})
    if done.returncode:
        raise RuntimeError(f"RecBole run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.environ.get("RECBOLE_PYTHON"),
                    help="a python with recbole installed (default $RECBOLE_PYTHON)")
    ap.add_argument("--movielens", default="../shared/data/ml-100k",
                    help="MovieLens-100K folder (RecBole atomic files) or its .inter file; '' skips")
    ap.add_argument("--generated", help="USERS,ITEMS,INTERACTIONS of generated logs, ';'-separated")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="4096,4194304", help="RecBole eval_batch_size values")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    python, why = recbole_python(args.python)
    if python is None:
        print(f"recbole_eval: skipped: {why}")
        return
    torch.set_num_threads(args.threads)
    ONE_THREAD.update({k: str(args.threads) for k in ONE_THREAD})
    rows = []
    for name, data in datasets(args):
        train, test = holdout(data, 0.2, seed=0)
        model = random_factor_model(train, args.factors, torch.device("cpu"))
        ours, metrics = time_recsys(model, train, test, args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            theirs = run_recbole(python, Path(tmp), model, train, test, args)
        for result in theirs["results"]:
            rows.append({"data": name, "users": data.n_users, "items": data.n_items,
                         "test_pairs": test.nnz, "test_users": int((test.user_degree > 0).sum()),
                         "recsys_s": ours, "recsys_ndcg@20": metrics["ndcg@20"],
                         "recsys_recall@20": metrics["recall@20"],
                         "recbole_batch": result["eval_batch_size"],
                         "recbole_users_per_batch": result["users_per_batch"],
                         "recbole_s": result["seconds"], "recbole_ndcg@20": result["ndcg@20"],
                         "recbole_recall@20": result["recall@20"],
                         "ratio": result["seconds"] / ours})
            print(json.dumps(rows[-1]), flush=True)
    print(f"# recbole {theirs['recbole']} (torch {theirs['torch']}), recsys torch "
          f"{torch.__version__}, {args.threads} thread(s)")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else f"{v}"
                                for v in row.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
