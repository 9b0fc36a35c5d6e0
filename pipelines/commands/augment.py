"""`recsys augment`: LLMRec triples, item attributes and user profiles into a folder."""

from __future__ import annotations

import argparse
import json

from pipelines.commands.common import non_negative_int, positive_int
from recsys.data.files import read_interactions, sharing_ids
from recsys.errors import RecsysError


def cmd_augment(args: argparse.Namespace) -> None:
    from recsys.atomic import check_folder_target
    from recsys.augment.llmrec import MANIFEST, augment, item_texts
    from recsys.augment.text import TextEncoder
    from recsys.data.features import read_features
    from recsys.store import open_model

    check_folder_target(args.out, MANIFEST)  # before any work: never replace a foreign folder
    base, _, label = open_model(args.base)
    train = read_interactions(args.train, user_map=base.user_map_, item_map=base.item_map_)
    if train.nnz == 0:
        raise RecsysError(f"{args.train}: no pair has a user and item known to the base model {args.base}")
    table = sharing_ids(read_features(args.item_text, "item_id", text=True), train.item_map.ids,
                        args.item_text, "item").reindex(train.item_map)
    item_text = item_texts(table, train.item_map)
    if missing := table.meta.get("rows_without_features"):
        print(f"note: {missing} items have no text in {args.item_text}; their id stands for it")
    encoder = client = None
    if args.augmenter == "offline":
        encoder = TextEncoder(args.encoder)
    else:
        from recsys.augment.llm import LLMClient, LLMSettings

        settings = LLMSettings.from_env(base_url=args.llm_url, model=args.llm_model,
                                        concurrency=args.llm_concurrency,
                                        max_tokens=args.llm_max_tokens, cache_dir=args.llm_cache,
                                        structured=args.llm_structured or None)
        client = LLMClient(settings)
    tasks = tuple(t.strip() for t in args.llm_tasks.split(",") if t.strip())
    result = augment(train, item_text, base, augmenter=args.augmenter, encoder=encoder,
                     client=client, n_candidates=args.candidates, n_users=args.users,
                     history=args.history, tasks=tasks, seed=args.seed)
    result.manifest["base"] = {"model": args.base, "name": base.name, "version": label}
    result.save(args.out, train.user_map, train.item_map)
    stats = result.manifest.get("llm", {}).get("stats", {})
    for task, s in stats.items():
        print(f"llm {task}: {s['calls']} calls ({s['cached']} cached), {s['calls_per_second']} calls/s, "
              f"{s['parse_failures']} parse failures, {s['refusals']} refusals, {s['errors']} errors")
    print(f"augmented {json.dumps(result.manifest['counts'])} -> {args.out}")


def register(sub: argparse._SubParsersAction) -> None:
    from recsys.augment.llmrec import AUGMENTERS, LLM_TASKS

    au = sub.add_parser("augment", help="LLMRec augmentation: (user, liked, disliked) triples "
                        "from a base model's candidates, item attributes and user profiles")
    au.add_argument("--train", required=True, help="training file (the base model's)")
    au.add_argument("--item-text", required=True, help="item_id,text file")
    au.add_argument("--base", required=True, help="base model folder or models:/NAME@ALIAS "
                    "whose top-N unseen items are the candidates")
    au.add_argument("--augmenter", choices=AUGMENTERS, default="offline",
                    help="offline: text-embedding similarity; llm: a chat model (default offline)")
    au.add_argument("--out", required=True, help="augmentation folder to write")
    au.add_argument("--candidates", type=int, default=10, help="candidates per user (default 10)")
    au.add_argument("--users", type=positive_int, help="augment this many sampled users (default: all)")
    au.add_argument("--history", type=positive_int, default=10,
                    help="history items shown per user (default 10)")
    au.add_argument("--seed", type=non_negative_int, default=0)
    au.add_argument("--encoder", help="sentence-transformers model folder for the offline "
                    "augmenter (default: the packaged all-MiniLM-L6-v2)")
    au.add_argument("--llm-url", help="OpenAI-compatible base URL (or RECSYS_LLM_BASE_URL)")
    au.add_argument("--llm-model", help="model name on that server (or RECSYS_LLM_MODEL)")
    au.add_argument("--llm-tasks", default=",".join(LLM_TASKS),
                    help=f"comma-separated LLM tasks (default {','.join(LLM_TASKS)})")
    au.add_argument("--llm-concurrency", type=int, help="requests in flight (default 4)")
    au.add_argument("--llm-max-tokens", type=int, help="most tokens per answer (default 128)")
    au.add_argument("--llm-structured", action="store_true",
                    help="ask for JSON answers that match a schema (servers with json_schema output)")
    au.add_argument("--llm-cache", help="answer cache folder (default $RECSYS_DATA_HOME/llm-answers)")
    au.set_defaults(func=cmd_augment)
