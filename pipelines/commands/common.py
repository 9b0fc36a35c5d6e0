"""Arguments and helpers shared by the commands that read a trained model."""

from __future__ import annotations

import argparse

from recsys.data.files import read_interactions
from recsys.errors import RecsysError


def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or models:/NAME@ALIAS")
    parser.add_argument("--train", help="training file (its items are excluded; default: the "
                        "ones stored with the model)")


def model_and_data(args: argparse.Namespace):
    """The model named by --model and the items to exclude: --train, else the stored ones."""
    from pipelines.export import open_model

    model, seen, _ = open_model(args.model)
    if args.train:
        seen = read_interactions(args.train, user_map=model.user_map_, item_map=model.item_map_)
    elif seen is None:
        raise RecsysError(f"{args.model} stores no training items: pass --train FILE")
    return model, seen
