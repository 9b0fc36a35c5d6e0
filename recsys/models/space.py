"""Hyperparameter search spaces, declared next to each model (`search_space` class attribute)
and read by `recsys tune`; the sampler itself (Optuna) lives in pipelines/tune.py.

A space maps parameter names to dimensions: `Float(low, high, log=...)`, `Int(low, high,
log=...)` or `Choice(values)`. A dimension with `when={"loss": ("relmf", "ubpr")}` is searched
only where those parameters hold one of the values (fixed ones, or ones sampled earlier in the
space's order); elsewhere the parameter keeps its value.

In YAML (`recsys tune --space FILE`, `tune: space:` in compare configs) a dimension is
`{low: 1e-3, high: 10, log: true}` (integer when the parameter is an integer; `type: float`
or `type: int` to say so), `{choices: [a, b]}` or a list (a choice), and a plain value fixes
the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.errors import RecsysError
from recsys.models.base import coerce_params, get_model_class, preset_params

Condition = Mapping[str, tuple]


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    log: bool = False
    when: Condition = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise RecsysError(f"search range needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise RecsysError(f"a log-scale search range needs low > 0, got low={self.low}")


@dataclass(frozen=True)
class Float(_Range):
    """A real parameter in [low, high], uniform or (log=True) log-uniform."""


@dataclass(frozen=True)
class Int(_Range):
    """An integer parameter in [low, high], uniform or (log=True) log-uniform."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low != int(self.low) or self.high != int(self.high):
            raise RecsysError(f"an integer search range needs integer bounds, got {self.low}..{self.high}")


@dataclass(frozen=True)
class Choice:
    """One of `values` (numbers, strings, booleans or None)."""

    values: tuple
    when: Condition = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.values:
            raise RecsysError("a search choice needs at least one value")


Dimension = Float | Int | Choice


def applies(dim: Dimension, params: Mapping[str, Any]) -> bool:
    """Whether `dim` is searched given the parameters decided so far."""
    return all(params.get(key) in values for key, values in dim.when.items())


def search_space(name: str, overrides: Any = None, *, source: str = "search space",
                 fixed: Mapping[str, Any] | None = None, varied: Iterable[str] = (),
                 fixed_by: str = "--param") -> tuple[dict[str, Dimension], dict[str, Any]]:
    """Model `name`'s space with `overrides` (a YAML mapping) applied: (space, fixed values).

    Every value the overrides can give the model (each choice, both ends of a range, a
    fixed value) is checked against the parameter's type and range, so a bad one fails
    here, before any trial. A parameter that `overrides` names and that is also fixed
    elsewhere (`fixed` values, or `varied` by a grid; `fixed_by` says where) is an error: one
    of the two would be ignored. So is a dimension of `overrides` whose condition (`when`)
    the fixed parameters rule out: it would never be searched.
    """
    cls = get_model_class(name)
    fixed = dict(fixed or {})
    parsed, given = parse_space(overrides, cls.param_defaults(), cls.search_space, source=source)
    both = sorted({*fixed, *varied} & {*parsed, *given})
    if both:
        raise RecsysError(f"{source}: {both[0]} is also fixed by {fixed_by}; give it in one place")
    for key, dim in parsed.items():
        _check_values(cls, name, key, dim, source)
    try:
        given = coerce_params(cls, given, model=name)
    except RecsysError as exc:
        raise RecsysError(f"{source}: {exc}") from None
    space = {k: v for k, v in {**cls.search_space, **parsed}.items() if k not in given}
    values = {**cls.param_defaults(), **preset_params(name), **given, **fixed}
    for key, dim in parsed.items():
        for condition, allowed in dim.when.items():
            if condition not in space and condition not in varied and values[condition] not in allowed:
                raise RecsysError(f"{source}: {key} is searched only where {condition} is one of "
                                  f"{', '.join(map(str, allowed))}, and {condition} is "
                                  f"{values[condition]!r} here; set {condition} to one of them or "
                                  f"drop {key}")
    return space, given


def _check_values(cls: type, model: str, key: str, dim: Dimension, source: str) -> None:
    """Every choice, and both ends of a range, must be a valid value of parameter `key`; a
    real range (`type: float`) of an integer parameter would only sample invalid values."""
    if isinstance(dim, Choice):
        values = list(dim.values)
    else:
        values = [int(dim.low), int(dim.high)] if isinstance(dim, Int) else [dim.low, dim.high]
    try:
        for value in values:
            coerce_params(cls, {key: value}, model=model)
    except RecsysError as exc:
        raise RecsysError(f"{source}: {key}: {exc}") from None
    if isinstance(dim, Float):
        try:
            coerce_params(cls, {key: math.nextafter(dim.low, dim.high)}, model=model)
        except RecsysError:
            raise RecsysError(f"{source}: {key}: model {model!r} takes whole numbers for {key}; "
                              "give a range of integers (no type: float)") from None


def parse_space(raw: Any, defaults: Mapping[str, Any], base: Mapping[str, Dimension] | None = None,
                *, source: str = "search space") -> tuple[dict[str, Dimension], dict[str, Any]]:
    """A YAML mapping -> (dimensions, fixed values); errors name `source` and the parameter.

    `defaults` are the model's parameters with their defaults (an integer default makes a
    range integer); `base` is the model's own space, whose conditions and kinds carry over to
    a dimension the file redefines.
    """
    if raw is None:
        return {}, {}
    if not isinstance(raw, Mapping):
        raise RecsysError(f"{source}: expected a mapping of parameter names, got {type(raw).__name__}")
    base = base or {}
    space: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for name, spec in raw.items():
        if name not in defaults:
            raise RecsysError(f"{source}: the model has no parameter {name!r}; "
                              f"parameters: {', '.join(sorted(defaults))}")
        try:
            if isinstance(spec, list | tuple):
                space[name] = Choice(_choices(spec), when=_when(base.get(name)))
            elif isinstance(spec, Mapping):
                space[name] = _dimension(name, dict(spec), defaults[name], base.get(name))
            else:
                fixed[name] = spec
        except RecsysError as exc:
            raise RecsysError(f"{source}: {name}: {exc}") from None
    return space, fixed


def _choices(values: list | tuple) -> tuple:
    """Choice values as the sampler stores them: a list (a value of a tuple parameter such as
    `hidden`) becomes its comma-separated text, which the parameter reads back."""
    return tuple(",".join(map(str, v)) if isinstance(v, list | tuple) else v for v in values)


def _when(dim: Dimension | None) -> Condition:
    return dim.when if dim is not None else {}


def _dimension(name: str, spec: dict, default: Any, base: Dimension | None) -> Dimension:
    unknown = set(spec) - {"low", "high", "log", "type", "choices"}
    if unknown:
        raise RecsysError(f"unknown key(s) {', '.join(sorted(unknown))}; use low, high, log, type "
                          "or choices")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list | tuple):
            raise RecsysError("choices takes a list and no other keys")
        return Choice(_choices(spec["choices"]), when=_when(base))
    if isinstance(default, bool):  # else read as a whole-number range, with a message to match
        raise RecsysError("a true/false parameter takes a choice such as [false, true], not a "
                          "range")
    if "low" not in spec or "high" not in spec:
        raise RecsysError("a range needs low and high")
    kind = spec.get("type")
    if kind is None:
        integer = isinstance(base, Int) or (base is None and isinstance(default, int)
                                            and not isinstance(default, bool))
        kind = "int" if integer else "float"
    if kind not in ("int", "float"):
        raise RecsysError(f"type must be int or float, got {kind!r}")
    try:  # YAML reads 1e-3 (no dot) as a string
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError):
        raise RecsysError(f"low and high must be numbers, got {spec['low']!r} and {spec['high']!r}") from None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise RecsysError(f"log must be true or false, got {log!r}")
    cls = Int if kind == "int" else Float
    return cls(low, high, log=log, when=_when(base))
