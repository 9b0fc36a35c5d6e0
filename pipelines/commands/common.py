"""Arguments and helpers shared by the commands: typed flags, output paths, model loading."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from recsys.data.files import read_seen
from recsys.errors import RecsysError


# ---- flag types: a bad value is one `recsys: error: argument --flag: ...` line, before work
def _number(raw: str, kind: type):
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{raw!r} is not {what}") from None


def positive_int(raw: str) -> int:
    value = _number(raw, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def non_negative_int(raw: str) -> int:
    value = _number(raw, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not an integer >= 0")
    return value


def finite_float(raw: str) -> float:
    value = _number(raw, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a finite number")
    return value


def positive_float(raw: str) -> float:
    value = finite_float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number > 0")
    return value


def non_negative_float(raw: str) -> float:
    value = finite_float(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number >= 0")
    return value


def fraction(raw: str) -> float:
    value = _number(raw, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not in (0, 1)")
    return value


def port(raw: str) -> int:
    value = _number(raw, int)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port in 1..65535")
    return value


# ---- output paths ------------------------------------------------------------------------
def check_out(path: str | Path, kind: str, flag: str = "--out") -> Path:
    """Fail before any work when `path` cannot become a `kind` ("file" or "folder"): an
    existing path of the other kind, or a file where one of its parent folders should be."""
    path = Path(path)
    if path.exists() and path.is_dir() != (kind == "folder"):
        other = "folder" if path.is_dir() else "file"
        raise RecsysError(f"{flag} {path}: is an existing {other}; expected a {kind} path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RecsysError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    return path


# ---- models ------------------------------------------------------------------------------
def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or models:/NAME@ALIAS")
    parser.add_argument("--train", help="training file (its items are excluded; default: the "
                        "ones stored with the model)")


def model_and_data(args: argparse.Namespace):
    """The model named by --model and the items to exclude: --train, else the stored ones."""
    from recsys.store import open_model

    model, seen, _ = open_model(args.model)
    if args.train:
        seen = read_seen(args.train, model, args.model)
    elif seen is None:
        raise RecsysError(f"{args.model} stores no training items: pass --train FILE")
    return model, seen
