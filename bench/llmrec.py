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


def run_variants(train, test, augs, args) -> None:
    raise SystemExit("the llmrec model is not available yet")


if __name__ == "__main__":
    main()
