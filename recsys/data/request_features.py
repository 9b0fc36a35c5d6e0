"""Request-time user features checked against the user features a model was trained with.

A new user's features arrive as one mapping (an HTTP body), or as a table of users (a
`--user-features` file, columns of the pyfunc input). They are checked before any ranking, so
a bad one is one clear error naming the feature (and, for tables, the row): a name that is not
one of the model's user feature columns is an error (a misspelt name must not pass silently),
and each value must fit its column's kind. A categorical value outside the vocabulary is not an
error: it maps to the unknown code, as a value too rare in training did, and is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.features import CategoricalColumn, FeatureTable, MultiColumn, show_value
from recsys.errors import DataError

_ROW = "__row__"  # the id column of encoded rows: their position
EXPECTED = {"categorical": "a text or integer value", "multi": "a text of values separated by "
            "the column's separator, or a list of values", "numeric": "a number",
            "dense": "a list of numbers", "text": "a text"}


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_names(table: FeatureTable, names: Iterable[str], where: str) -> None:
    """Every name must be a feature column of `table`; errors list the known ones."""
    for name in names:
        if name not in table.columns:
            raise DataError(f"{where}: unknown user feature {show_value(name)}; the model's user "
                            f"features are: {', '.join(table.columns)}")


def feature_row(table: FeatureTable, values: Mapping[str, Any], where: str = "features") -> dict:
    """One user's features (name -> JSON value) as a row of raw cells `FeatureTable.encode`
    reads; None is a missing value. A multi-valued feature may be a list. Errors (DataError)
    name `where.<feature>` and the value."""
    check_names(table, values, where)
    row = {}
    for name, value in values.items():
        column = table.columns[name]
        at = f"{where}.{name}"
        if value is None:
            row[name] = None
            continue
        kind = column.kind
        ok = {"categorical": isinstance(value, str) or (_is_number(value) and float(value).is_integer()),
              "multi": isinstance(value, str) or (isinstance(value, list) and all(
                  isinstance(v, str) or (_is_number(v) and float(v).is_integer()) for v in value)),
              "numeric": _is_number(value) and math.isfinite(value),
              "dense": isinstance(value, list) and all(_is_number(v) and math.isfinite(v)
                                                       for v in value),
              "text": isinstance(value, str)}[kind]
        if not ok:
            raise DataError(f"{at}: expected {EXPECTED[kind]} (a {kind} feature), got {show_value(value)}")
        if kind == "dense" and len(value) != column.dim:
            raise DataError(f"{at}: {len(value)} numbers, expected {column.dim} (a dense feature)")
        if kind == "categorical" and not isinstance(value, str):
            value = str(int(value))
        if kind == "multi" and isinstance(value, list):
            value = column.sep.join(str(int(v)) if _is_number(v) else v for v in value)
        row[name] = value
    return row


def check_frame(table: FeatureTable, frame: pd.DataFrame, source: str,
                id_col: str | None = None) -> None:
    """Raise the first bad cell of a frame of raw feature columns (one row per user, ids in
    `id_col`, if any: each once), naming `source`, the column, the 1-based data row and the
    value."""
    check_names(table, frame.columns.drop(id_col) if id_col else frame.columns, source)
    if id_col is None:
        frame = frame.reset_index(drop=True).assign(**{_ROW: np.arange(len(frame))})
    table.encode(frame, id_col or _ROW, source=source)


def unknown_values(table: FeatureTable, row: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per feature, the values of a row from `feature_row` that are not in the column's
    vocabulary (categorical and multi-valued features; they read as the unknown code)."""
    out = {}
    for name, value in row.items():
        column = table.columns[name]
        if value is None or not isinstance(column, CategoricalColumn | MultiColumn):
            continue
        pieces = [value] if isinstance(column, CategoricalColumn) else value.split(column.sep)
        values = [v.strip() for v in pieces if v.strip()]
        unknown = [v for v, code in zip(values, column.vocab.encode(values), strict=True) if not code]
        if unknown:
            out[name] = unknown
    return out
