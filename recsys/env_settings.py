"""Settings models read from environment variables, with one clear error for a bad value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from recsys.errors import RecsysError

S = TypeVar("S", bound=BaseModel)


def settings_from_env(cls: type[S], prefix: str, what: str, overrides: Mapping[str, Any],
                      flags: Mapping[str, str] | None = None) -> S:
    """`cls` from `<prefix><FIELD>` variables, overridden by the non-None `overrides`.

    A value that fails validation raises one RecsysError naming the setting, its variable
    and, where `flags` has one, the command-line flag that also sets it (`what`: the kind of
    setting, e.g. "serving setting").
    """
    values: dict[str, Any] = {}
    for name in cls.model_fields:
        if (raw := os.environ.get(prefix + name.upper())) is not None:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        flag = f", or {flags[field]}" if flags and field in flags else ""
        raise RecsysError(f"{what} {field} ({prefix}{field.upper()}{flag}): "
                          f"{first['msg']}") from None
