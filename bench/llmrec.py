"""LLMRec on MovieLens-100K: does LLM/text augmentation help LightGCN?

    python bench/llmrec.py --data ../shared/data/ml-100k [--seeds 0,1,2] [--llm-users 200]
                           [--device cpu|cuda] [--work bench/results/llmrec] [--skip-llm]

Every rating is an interaction; one per-user random 80/20 split (seed 0). Item text is
"title (year) | genres" from ml-100k.item. Steps:

1. base model `als` (implicit ALS) on train: its top-10 unseen items per user are the candidates;
2. offline augmentation (all users): text-embedding similarity (all-MiniLM-L6-v2);
3. LLM augmentation: SmolLM2-135M-Instruct on a local llama.cpp server (CPU), `--llm-tasks`
   (default: edges only) for `--llm-users` sampled users, schema-constrained JSON; calls/s and the parse
   failure rate are reported (answers are cached: a rerun makes no calls);
4. per seed: `lightgcn`; `llmrec` with side information only (no triples); with offline
   triples; with LLM triples. Every model picks its epoch on a validation split carved from
   train; "selected" is, per seed, the variant with the best validation score (never the
   test set). NDCG@20 and Recall@20 overall and on tail items (all but the 20% most popular),
   mean and standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.augment.llmrec import Augmentation, augment  # noqa: E402
from recsys.augment.text import TextEncoder  # noqa: E402
from recsys.data import random_split, read_atomic  # noqa: E402
from recsys.evaluate import evaluate  # noqa: E402

METRICS = ("ndcg@20", "recall@20", "tail_ndcg@20", "tail_recall@20")


def load(folder: Path) -> tuple[Interactions, pd.DataFrame]:
    events = read_atomic(folder / "ml-100k.inter")
    items = read_atomic(folder / "ml-100k.item")
    text = (items["movie_title"].astype(str) + " (" + items["release_year"].astype(str) + ") | "
            + items["class"].astype(str).str.replace(" ", ", "))
    return Interactions.from_frame(events), pd.DataFrame({"item_id": items["item_id"], "text": text})


def item_texts(train: Interactions, table: pd.DataFrame) -> np.ndarray:
    index = train.item_map.index_of(table["item_id"])
    texts = np.asarray([str(i) for i in train.item_map.ids], dtype=object)
    texts[index[index >= 0]] = table["text"].to_numpy(dtype=object)[index >= 0]
    return texts


def augmentations(train, texts, work: Path, args) -> dict[str, Augmentation]:
    """The offline and LLM augmentations, each computed once and kept in `work`."""
    out = {}
    base = None
    for name in ("offline", "llm"):
        folder = work / f"aug-{name}"
        if name == "llm" and args.skip_llm:
            continue
        if not folder.exists():
            if base is None:
                base = create_model("als", progress=False).fit(train)
            start = time.perf_counter()
            if name == "offline":
                aug = augment(train, texts, base, augmenter="offline",
                              encoder=TextEncoder(device=args.device, progress=False))
            else:
                aug = llm_augment(train, texts, base, work, args)
            aug.manifest["seconds"] = round(time.perf_counter() - start, 1)
            aug.save(folder, train.user_map, train.item_map)
        out[name] = Augmentation.load(folder, train.user_map, train.item_map)
        m = out[name].manifest
        print(f"# augmentation {name}: {m['counts']['triples']} triples in {m['seconds']}s")
        for task, s in m.get("llm", {}).get("stats", {}).items():
            print(f"#   llm {task}: {s['prompts']} prompts, {s['calls']} calls ({s['cached']} cached), "
                  f"{s['calls_per_second']} calls/s, parse failure rate {s['parse_failure_rate']:.1%} "
                  f"({s['parse_failures']} unparsed, {s['refusals']} refusals, {s['errors']} errors)")
    return out


def llm_augment(train, texts, base, work: Path, args) -> Augmentation:
    from recsys.augment.llm import LLMClient, LLMSettings
    from recsys.augment.local_llm import local_server

    with local_server(context=4096, parallel=args.llm_parallel, threads=args.llm_threads) as url:
        settings = LLMSettings(base_url=url, model="SmolLM2-135M-Instruct", max_tokens=64,
                               concurrency=args.llm_parallel, structured=True,
                               cache_dir=str(work / "llm-cache"))
        return augment(train, texts, base, augmenter="llm", client=LLMClient(settings),
                       n_users=args.llm_users, tasks=tuple(args.llm_tasks.split(",")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/ml-100k"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--llm-users", type=int, default=200, help="users the LLM augments")
    ap.add_argument("--llm-tasks", default="edges", help="LLM tasks: edges,items,users")
    ap.add_argument("--llm-parallel", type=int, default=2, help="requests decoded at once")
    ap.add_argument("--llm-threads", type=int, default=2, help="CPU threads of the LLM server")
    ap.add_argument("--skip-llm", action="store_true", help="no LLM augmentation")
    ap.add_argument("--only-augment", action="store_true", help="stop after the augmentations")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=Path("bench/results/llmrec"))
    ap.add_argument("--json", type=Path, help="write the per-seed results here")
    ap.add_argument("--encoder", help="sentence-transformers folder for the text side information "
                                      "(default: the packaged all-MiniLM-L6-v2)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {platform.node()} | {os.cpu_count()} cpus | torch {torch.__version__} on {device}")

    data, table = load(args.data)
    train, test = random_split(data, test_frac=0.2, seed=0)
    texts = item_texts(train, table)
    text_file = args.work / "item_text.csv"
    pd.DataFrame({"item_id": train.item_map.ids, "text": texts}).to_csv(text_file, index=False)
    augs = augmentations(train, texts, args.work, args)
    if args.only_augment:
        return
    run_variants(train, test, augs, args)


def variants(work: Path, augs: dict, encoder: str | None = None) -> dict[str, tuple[str, dict]]:
    """Name -> (model, parameters) of each compared model."""
    text = {"encoder": encoder} if encoder else {}
    out = {"lightgcn": ("lightgcn", {}),
           "+text": ("llmrec", {"augmentation": str(work / "aug-offline"), "aug_rate": 0.0, **text}),
           "+text+offline triples": ("llmrec", {"augmentation": str(work / "aug-offline"), **text})}
    if "llm" in augs:
        out["+text+LLM triples"] = ("llmrec", {"augmentation": str(work / "aug-llm"), **text})
    return out


def triple_quality(augs: dict, test: Interactions) -> None:
    """How often i+ and i- of the triples are test positives (a diagnostic, not a selection)."""
    for name, aug in augs.items():
        u, i, j = aug.triples.T
        pos, neg = (float(np.asarray(test.matrix[u, x]).ravel().astype(bool).mean()) for x in (i, j))
        print(f"# {name} triples: i+ is a test positive {pos:.1%}, i- {neg:.1%} ({len(u)} triples)")


def run_variants(train, test, augs, args) -> None:
    triple_quality(augs, test)
    rows: dict[str, list[dict]] = {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        scores = {}
        for name, (model, params) in variants(args.work, augs, args.encoder).items():
            start = time.perf_counter()
            fitted = create_model(model, seed=seed, device=args.device, progress=False, **params).fit(train)
            metrics = evaluate(fitted, test, train=train, k=20)
            row = {m: metrics[m] for m in METRICS}
            row.update(seconds=time.perf_counter() - start, valid=fitted.fit_info_["best_valid"],
                       epoch=fitted.fit_info_["best_epoch"])
            rows.setdefault(name, []).append(row)
            scores[name] = row
            print(f"seed {seed} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        chosen = max(scores, key=lambda n: scores[n]["valid"])
        rows.setdefault("selected on validation", []).append({**scores[chosen], "chosen": chosen})
    table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def table(rows: dict[str, list[dict]]) -> None:
    cols = (*METRICS, "valid", "seconds")
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, runs in rows.items():
        cells = []
        for c in cols:
            v = np.array([r[c] for r in runs], dtype=float)
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}" if c != "seconds" else f"{v.mean():.0f}")
        extra = f" (chose {', '.join(r['chosen'] for r in runs)})" if "chosen" in runs[0] else ""
        print(f"| {name}{extra} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
