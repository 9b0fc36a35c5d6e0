"""`recsys train`: fit a registered model on a training file and save its folder."""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.commands.common import check_out
from recsys import distributed
from recsys.data.files import aligned_side_features, read_interactions, with_side_files
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import drop_training_pairs
from recsys.models.base import (
    check_side_inputs,
    coerce_params,
    create_model,
    get_model_class,
    model_names,
)
from recsys.models.persist import check_model_target
from recsys.models.torch_model import TorchRecommender
from recsys.train import resolve_device


def parse_params(model: str, pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings to typed, range-checked constructor arguments of `model`."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise RecsysError(f"--param {pair!r}: expected key=value")
        key = key.strip()
        if key in params:
            raise RecsysError(f"--param {key} given twice ({params[key]!r} and {raw!r}); give it once")
        params[key] = raw
    return coerce_params(get_model_class(model), params, model=model)


SIDE_FLAGS = ("item_features", "user_features", "item_text")


def side_files(args: argparse.Namespace) -> dict[str, str]:
    """The side-feature flags given ({"item_features": path, ...}), each checked to be one the
    model reads."""
    sides = {flag: getattr(args, flag) for flag in SIDE_FLAGS if getattr(args, flag)}
    for flag in sides:
        try:
            check_side_inputs(args.model, [flag])
        except RecsysError as exc:
            raise RecsysError(f"--{flag.replace('_', '-')}: {exc}") from None
    return sides


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--levels and the side-feature files, shared by `train` and `tune`."""
    parser.add_argument("--levels", help="level names weakest first, e.g. 'view<cart<purchase', "
                        "for a 'level' column of names or to name its integers 1..L")
    parser.add_argument("--item-features", help="item_id + feature columns ('|' separates "
                        "values), for models that use side information")
    parser.add_argument("--user-features", help="user_id + feature columns, for models that use them")
    parser.add_argument("--item-text", help="item_id,text file, for models that use item text")


def cmd_train(args: argparse.Namespace) -> None:
    check_out(args.out, "folder")
    sides = side_files(args)
    check_model_target(args.out)
    if args.valid and not issubclass(get_model_class(args.model), TorchRecommender):
        raise RecsysError(f"--valid: model {args.model!r} does not select epochs on validation "
                          "data (the torch models do)")
    params = parse_params(args.model, args.param)
    if args.augmentation:
        if "augmentation" not in get_model_class(args.model).param_defaults():
            raise RecsysError(f"--augmentation: model {args.model!r} takes no augmentation "
                              "folder (llmrec does)")
        params["augmentation"] = args.augmentation
    if _parallel(args, params):
        return
    model = create_model(args.model, **params)
    train = with_side_files(read_interactions(args.train, level_names=args.levels), **sides)
    valid = None
    if args.valid:
        valid = read_interactions(args.valid, user_map=train.user_map, item_map=train.item_map,
                                  level_names=train.level_names if args.levels else None)
        if valid.nnz == 0:
            raise RecsysError(f"{args.valid}: no pair has a user and item seen in {args.train}")
        if drop_training_pairs(valid, train)[0].nnz == 0:
            raise RecsysError(f"{args.valid}: every pair is also in {args.train}; validation "
                              "needs pairs the model does not train on")
        valid = aligned_side_features(valid, train)
    model.fit(train, valid=valid)
    if not distributed.is_main():
        return
    model.save(args.out, seen=train)
    info = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in model.fit_info_.items())
    print(f"trained {args.model} ({info}) -> {args.out}")


def _parallel(args: argparse.Namespace, params: dict[str, Any]) -> bool:
    """Check the process count; with `--nproc` N > 1 outside a launcher, run this same command
    as N data-parallel processes and return True (the processes did the work)."""
    world = distributed.world()
    nproc = args.nproc if args.nproc is not None else world.size
    if nproc < 1:
        raise RecsysError(f"--nproc must be at least 1, got {nproc}")
    if world.distributed and nproc != world.size:
        raise RecsysError(f"--nproc {nproc}, but the launcher started {world.size} processes")
    if nproc > 1 and not issubclass(get_model_class(args.model), TorchRecommender):
        raise RecsysError(f"--nproc {nproc}: model {args.model!r} does not train with torch; "
                          "data-parallel training applies to torch models (mf, lightgcn, ...)")
    if nproc == 1 or world.distributed:
        return False
    distributed.check_nproc(nproc, resolve_device(params.get("device", "auto")))
    distributed.launch(nproc, ["-m", "pipelines.cli", *args.argv])
    return True


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train a model and save it to a folder")
    tr.add_argument("--model", required=True, help=f"model name: {', '.join(model_names())}")
    tr.add_argument("--train", required=True, help="training file (user_id,item_id[,rating,...])")
    tr.add_argument("--valid", help="validation file for early stopping (default: carved from train)")
    tr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="model parameter, repeatable (see `recsys models`)")
    tr.add_argument("--out", required=True, help="model folder to write")
    add_data_arguments(tr)
    tr.add_argument("--augmentation", help="folder written by `recsys augment` (llmrec)")
    tr.add_argument("--nproc", type=int, help="train data-parallel in this many processes: one "
                    "per GPU (NCCL), or on CPU (gloo) with --param device=cpu; also set by "
                    "torchrun")
    tr.set_defaults(func=cmd_train)
