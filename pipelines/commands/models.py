"""`recsys models`: the registered models and presets with their parameters."""

from __future__ import annotations

import argparse

from recsys.models.base import get_model_class, model_names, preset_params


def cmd_models(args: argparse.Namespace) -> None:
    for name in model_names():
        params = {**get_model_class(name).param_defaults(), **preset_params(name)}
        print(f"{name}: " + (", ".join(f"{k}={v}" for k, v in params.items()) or "(no parameters)"))


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list models and their parameters").set_defaults(func=cmd_models)
