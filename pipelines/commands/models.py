"""`recsys models`: the registered models and presets with their parameters."""

from __future__ import annotations

import argparse

from recsys.models.base import get_model_class, model_names, preset_params
from recsys.models.params import describe_params


def cmd_models(args: argparse.Namespace) -> None:
    """Each model with its parameters: type, range and default (a preset's value marked)."""
    for name in model_names():
        params = describe_params(get_model_class(name))
        for key, value in preset_params(name).items():
            params[key] = f"{params[key].rpartition(' = ')[0]} = {value} (preset)"
        print(f"{name}:" + "".join(f"\n  {k}: {v}" for k, v in params.items()) if params else
              f"{name}: (no parameters)")


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list models and their parameters").set_defaults(func=cmd_models)
