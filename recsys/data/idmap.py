"""Stable mapping between external ids (ints or strings) and contiguous indices."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import DataError

CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")


def normalize_ids(values: Iterable) -> np.ndarray:
    """Return ids as int64 when every value is a canonical integer, else as Python strings.

    "42" becomes 42, but "007" stays the string "007": nothing the user wrote is lost, and ids
    read from CSV and from Parquet compare equal.
    """
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise DataError(f"missing id at row {row}")
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series.dtype):
        arr = series.to_numpy()
        if np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        return series.astype(str).to_numpy(dtype=object)
    as_str = series.astype(str)
    if len(as_str) and as_str.str.fullmatch(CANONICAL_INT.pattern).all():
        return as_str.astype(np.int64).to_numpy()
    return as_str.to_numpy(dtype=object)


class IdMap:
    """External id <-> index in [0, n). Built sorted so the same ids always give the same map."""

    def __init__(self, ids: Iterable):
        ids = normalize_ids(pd.Series(list(ids) if not hasattr(ids, "__len__") else ids))
        self._index = pd.Index(ids)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            raise DataError(f"id map has a duplicated id: {dup!r}")

    @classmethod
    def from_values(cls, values: Iterable) -> IdMap:
        """Map over the distinct values, in sorted order (ints numerically, strings lexically)."""
        ids = normalize_ids(values)
        return cls(np.unique(ids) if ids.dtype != object else sorted(set(ids)))

    @property
    def ids(self) -> np.ndarray:
        return self._index.to_numpy()

    @property
    def is_integer(self) -> bool:
        return self._index.dtype.kind == "i"

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)}, dtype={'int' if self.is_integer else 'str'})"

    def index_of(self, values: Iterable) -> np.ndarray:
        """Indices of `values`; -1 where an id is not in the map."""
        ids = normalize_ids(values)
        if self.is_integer and ids.dtype == object:
            # text ids against an integer map: only canonical integers can match
            text = pd.Series(ids, dtype=str)
            ok = text.str.fullmatch(CANONICAL_INT.pattern).to_numpy()
            out = np.full(len(ids), -1, dtype=np.int64)
            out[ok] = self._index.get_indexer(text[ok].astype(np.int64).to_numpy())
            return out
        if not self.is_integer and ids.dtype != object:
            ids = ids.astype(str).astype(object)
        return self._index.get_indexer(ids).astype(np.int64)

    def to_ids(self, indices: np.ndarray) -> np.ndarray:
        """External ids at `indices`."""
        return self._index.to_numpy()[np.asarray(indices)]

    def to_json(self) -> dict:
        return {"dtype": "int" if self.is_integer else "str", "ids": self.ids.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> IdMap:
        ids = data["ids"]
        arr = np.asarray(ids, dtype=np.int64) if data["dtype"] == "int" else np.asarray(ids, dtype=object)
        return cls(arr)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        return cls.from_json(json.loads(Path(path).read_text()))
