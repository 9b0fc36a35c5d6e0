"""Typed, range-checked hyperparameters: one place types `--param` strings, YAML values and
Python arguments from a model's constructor annotations, and checks their ranges.

A model declares each hyperparameter once, as an annotated constructor argument; the ranges
travel in the annotation (`typing.Annotated` with `annotated_types` constraints), so the CLI,
compare configs and `create_model` all refuse `factors=0` or `lr=nan` with one line naming the
parameter, before any work:

    factors: Positive[int] = 64
    reg: NonNegative[float] = 0.03
    loss: Literal["bpr", "bce"] = "bpr"
    hidden: tuple[int, ...] = (128, 64)      # from the string "128,64" or a YAML list
    beta: float | None = None                # "none" / "null" give None
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Annotated, Any, TypeVar, Union

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from recsys.errors import RecsysError

T = TypeVar("T")
Positive = Annotated[T, Gt(0)]
NonNegative = Annotated[T, Ge(0)]
Fraction = Annotated[float, Ge(0), Lt(1)]  # a share of something, 0 <= x < 1
Probability = Annotated[float, Ge(0), Le(1)]
Share = Annotated[float, Gt(0), Le(1)]  # a non-empty share, 0 < x <= 1 (e.g. weights kept)


def _level_number(value: Any) -> Any:
    """'2' -> 2, so a level given as text (--param grade=2) is the same value as the number."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


# a level of graded feedback: its 1-based number (0: the deepest) or its name
Level = Annotated[NonNegative[int] | str, BeforeValidator(_level_number)]

_NONE_WORDS = ("none", "null")
# NaN and infinity are never a sensible hyperparameter: refuse them for every float
_CONFIG = ConfigDict(allow_inf_nan=False)


def check_with(fn) -> AfterValidator:
    """Annotation metadata for a check beyond a range: `fn(value)` returns the value or raises
    ValueError with a message saying what is expected (e.g. a metric name)."""
    return AfterValidator(fn)


def _device(value: str) -> str:
    if value != "auto":
        import torch

        try:
            torch.device(value)
        except RuntimeError:
            raise ValueError("expected auto, cpu, cuda or cuda:N") from None
    return value


Device = Annotated[str, check_with(_device)]  # availability is checked when training starts


@functools.cache
def _signature(cls: type) -> dict[str, tuple[Any, Any]]:
    """{name: (default, annotation or None)} of the constructor's parameters."""
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    # dataclass fields are resolved per class (their annotations live in several modules)
    hints = typing.get_type_hints(cls if dataclasses.is_dataclass(cls) else cls.__init__,
                                  include_extras=True)
    return {n: (p.default, hints.get(n)) for n, p in params.items()}


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation, config=_CONFIG)


def param_defaults(cls: type) -> dict[str, Any]:
    return {n: default for n, (default, _) in _signature(cls).items()}


def describe_params(cls: type) -> dict[str, str]:
    """{name: "type, range, = default"} for listings (`recsys models`), e.g.
    "int > 0 = 64", "bpr|bce = bpr", "float | None = None"."""
    return {name: f"{_describe(annotation)} = {default}" if annotation is not None else f"= {default}"
            for name, (default, annotation) in _signature(cls).items()}


def _describe(annotation: Any) -> str:
    bounds = []
    if typing.get_origin(annotation) is Annotated:
        annotation, *meta = typing.get_args(annotation)
        symbols = {Gt: ">", Ge: ">=", Lt: "<", Le: "<="}
        for m in meta:
            for kind, symbol in symbols.items():
                if isinstance(m, kind):
                    bounds.append(f"{symbol} {getattr(m, kind.__name__.lower())}")
            if isinstance(m, MinLen):
                bounds.append(f"(at least {m.min_length})")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        text = "|".join(map(str, args))
    elif origin in (Union, types.UnionType):
        text = " | ".join(_describe(a) if a is not type(None) else "None" for a in args)
    elif origin is tuple:
        text = f"{_describe(args[0])},..."
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return " ".join([text, *bounds])


def coerce_params(cls: type, params: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """`params` typed and checked against `cls`'s constructor annotations.

    Strings (from the CLI) become ints, floats, bools, Literal choices, tuples ("128,64,32")
    or None ("none"); YAML and Python values are checked the same way. Raises RecsysError
    naming the parameter: an unknown name, a wrong type, or a value out of range.
    """
    model = model or getattr(cls, "name", cls.__name__)
    signature = _signature(cls)
    unknown = sorted(set(params) - set(signature))
    if unknown:
        raise RecsysError(f"model {model!r} has no parameter(s) {', '.join(unknown)}; "
                          f"parameters: {', '.join(sorted(signature))}")
    typed = {}
    for name, value in params.items():
        annotation = signature[name][1]
        if annotation is None:
            typed[name] = value
            continue
        try:
            typed[name] = _adapter(annotation).validate_python(_from_text(value, annotation))
        except ValidationError as exc:
            error = exc.errors()[0]
            message = error["msg"].removeprefix("Value error, ")
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise RecsysError(f"model {model!r}: parameter {name}={shown}: "
                              f"{message[0].lower()}{message[1:]}") from None
    return typed


def _strip(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation


def _optional_inner(annotation: Any) -> tuple[bool, Any]:
    """(accepts None, the annotation without None)."""
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            return True, rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return False, annotation


def _from_text(value: Any, annotation: Any) -> Any:
    """Pre-parse what a string cannot say by itself: None, and comma-separated tuples."""
    if not isinstance(value, str):
        return value
    optional, inner = _optional_inner(annotation)
    if optional and value.strip().lower() in _NONE_WORDS:
        return None
    if typing.get_origin(_strip(inner)) is tuple:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value
