"""Side features of users or items: a table of typed columns aligned to an IdMap.

Column kinds:
- `categorical`: one value per row, encoded by a `Vocabulary` (code 0 = unknown or missing).
- `multi`: several values per row separated by `|` (e.g. genres), stored as CSR `offsets`
  (n + 1) and `codes`, so `nn.EmbeddingBag(...)(codes, offsets[:-1])` reads them directly.
- `numeric`: float32, standardised with the mean and standard deviation of the fitting rows;
  a missing value becomes 0 (the fitting mean) and is flagged in `missing`.
- `dense`: a float32 vector per row (e.g. a text embedding): a Parquet list column, or
  whitespace-separated numbers in a text file; a missing row is zeros, flagged in `missing`.
- `text`: raw text, for encoders that turn it into a dense column.

Vocabularies and statistics are fitted on the rows of the training ids only (`fit_ids`), so
a value seen only outside training maps to the unknown code, as it would at serving time.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from recsys.atomic import atomic_dir
from recsys.data.idmap import IdMap, normalize_ids
from recsys.errors import DataError

log = logging.getLogger("recsys")

KINDS = ("categorical", "multi", "numeric", "dense", "text")
MULTI_SEP = "|"  # separates the values of a multi-valued cell in feature files
IGNORE = "ignore"
TABLE_FILE, ARRAYS_FILE = "table.json", "arrays.npz"
TABLE_FORMAT = 1


# ---- cells: one column of a frame as text, with the data row of each value ----------------
def _row(position: int) -> int:
    """Positions are 0-based; messages name the 1-based data row, as a spreadsheet shows it."""
    return int(position) + 1


def first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """(first, repeat): 0-based positions of a value's first occurrence and of its repeat, for
    the earliest repeat in `values`; None when every value is unique (for errors naming both rows)."""
    index = pd.Index(values)
    repeated = index.duplicated()
    if not repeated.any():
        return None
    row = int(np.argmax(repeated))
    return int(np.argmax(index == index[row])), row


def show_value(value: object, limit: int = 60) -> str:
    """A cell as an error message shows it: text quoted, anything long cut."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_vector(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _texts(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells as stripped strings (integral floats without '.0') and a missing mask."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy()
        with np.errstate(invalid="ignore"):
            integral = ~missing & (np.mod(np.where(missing, 0, values), 1) == 0)
        whole = np.where(integral, values, 0).astype(np.int64).astype(str)
        text = np.where(integral, whole, series.astype(str)).astype(object)
    else:
        text = series.astype(str).str.strip().to_numpy(dtype=object)
    text[missing] = ""
    return text, missing | (text == "")


def _floats(series: pd.Series, source: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 and a missing mask; a non-number is an error naming its row."""
    text, missing = _texts(series) if not pd.api.types.is_numeric_dtype(series.dtype) else (
        None, series.isna().to_numpy())
    values = pd.to_numeric(series if text is None else pd.Series(text), errors="coerce")
    values = values.to_numpy(dtype=np.float64)
    bad = ~missing & ~np.isfinite(values)
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(f"{source}: column {name!r} row {_row(pos)}: {show_value(series.iloc[pos])} "
                        "is not a finite number (the column is numeric)")
    return np.where(missing, 0.0, values), missing


def infer_kind(series: pd.Series) -> str:
    """The column kind a frame column looks like; `kinds=` in `from_frame` overrides it.

    Lists of numbers -> dense; numbers -> numeric; text holding `|` -> multi; text that is
    >= 2 whitespace-separated numbers of one length -> dense, and so is text that is that in
    all but a few of 10 or more cells (so that reading it names the odd cell instead of
    turning every vector into a category); mostly distinct text of three or more words ->
    text; anything else -> categorical.
    """
    present = series.dropna()
    if present.empty or pd.api.types.is_bool_dtype(series.dtype):
        return "categorical"
    if _is_vector(present.iloc[0]):
        return "dense"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "numeric"
    text = present.astype(str).str.strip()
    text = text[text != ""]
    if text.empty:
        return "categorical"
    if pd.to_numeric(text, errors="coerce").notna().all():
        return "numeric"
    if text.str.contains(MULTI_SEP, regex=False).any():
        return "multi"
    words = text.str.split()
    lengths = words.str.len()
    numbers = pd.to_numeric(words.explode(), errors="coerce").notna().groupby(level=0).all()
    if lengths.min() >= 2 and lengths.nunique() == 1 and numbers.all():
        return "dense"
    width = lengths.mode().iloc[0]
    if len(text) >= 10 and width >= 2 and (lengths == width).mean() >= 0.9 and numbers.mean() >= 0.9:
        return "dense"
    if text.nunique() > 0.5 * len(text) and lengths.mean() >= 3:
        return "text"
    return "categorical"


def _warn_near_numeric(series: pd.Series, source: str, name: str) -> None:
    """Warn when a column read as categorical is numbers in all but a few cells: a typo in
    one cell (`abc` in an age column) would otherwise silently turn every age into a category."""
    text, missing = _texts(series)
    present = ~missing
    if present.sum() < 10:
        return
    numbers = pd.to_numeric(pd.Series(text[present]), errors="coerce").notna().to_numpy()
    if numbers.mean() >= 0.9:
        pos = int(np.flatnonzero(present)[np.argmin(numbers)])
        log.warning("%s: column %r is numbers except in %d of %d cells (first: row %d, %s), so "
                    "it is read as categorical; fix the cells or declare its kind (kinds=)",
                    source, name, int((~numbers).sum()), int(present.sum()), _row(pos),
                    show_value(series.iloc[pos]))


# ---- vocabulary ------------------------------------------------------------------------------
class Vocabulary:
    """Value -> code in 1..n, sorted for determinism; code 0 is out-of-vocabulary or missing.

    An embedding table for a vocabulary needs `size` (= n + 1) rows.
    """

    def __init__(self, values: Iterable[str]):
        self._index = pd.Index([str(v) for v in values], dtype=object)
        if not self._index.is_unique:
            raise DataError(f"vocabulary has a duplicated value: "
                            f"{show_value(self._index[self._index.duplicated()][0])}")

    @classmethod
    def build(cls, values: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The values seen at least `min_count` times (empty strings are missing, not values)."""
        counts = pd.Series(list(values), dtype=object).value_counts()
        kept = counts.index[(counts >= min_count).to_numpy()]
        return cls(sorted(v for v in kept if v != ""))

    @property
    def size(self) -> int:
        return len(self._index) + 1

    @property
    def values(self) -> list[str]:
        return self._index.tolist()

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index.equals(other._index)

    def __repr__(self) -> str:
        return f"Vocabulary(n={len(self)})"

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """int64 codes; 0 for values not in the vocabulary (and for '')."""
        values = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                            dtype=object)
        return (self._index.get_indexer(values) + 1).astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values of `codes`; None for code 0."""
        table = np.asarray([None, *self._index], dtype=object)
        return table[np.asarray(codes)]


# ---- columns ---------------------------------------------------------------------------------
class Column:
    """One feature column: its learned encoding (vocabulary, statistics) and its rows.

    `fit` learns the encoding from the fitting rows and encodes all rows; `encode` applies the
    learned encoding to new cells (e.g. request-time features); `take(rows)` selects rows, -1
    giving a missing row.
    """

    kind: ClassVar[str]
    name: str

    @classmethod
    def fit(cls, name: str, series: pd.Series, fit_mask: np.ndarray, *, source: str,
            sep: str, min_count: int) -> Column:
        raise NotImplementedError

    def encode(self, series: pd.Series, source: str) -> Column:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> Column:
        raise NotImplementedError

    def spec(self) -> dict:
        """JSON-ready encoding (everything but the rows)."""
        return {"name": self.name, "kind": self.kind}

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def restore(cls, spec: dict, arrays: Mapping[str, np.ndarray]) -> Column:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


def _pick(array: np.ndarray, rows: np.ndarray, fill) -> np.ndarray:
    out = array[np.where(rows < 0, 0, rows)] if len(array) else np.full(
        (len(rows), *array.shape[1:]), fill, dtype=array.dtype)
    out[rows < 0] = fill
    return out


@dataclass(frozen=True, eq=False)
class CategoricalColumn(Column):
    kind: ClassVar[str] = "categorical"
    name: str
    vocab: Vocabulary
    codes: np.ndarray  # int64 (n,)

    @classmethod
    def fit(cls, name, series, fit_mask, *, source, sep, min_count):
        text, _ = _texts(series)
        return cls(name, Vocabulary.build(text[fit_mask], min_count), np.zeros(0, np.int64)
                   ).encode(series, source)

    def encode(self, series, source):
        text, _ = _texts(series)
        return CategoricalColumn(self.name, self.vocab, self.vocab.encode(text))

    def take(self, rows):
        return CategoricalColumn(self.name, self.vocab, _pick(self.codes, rows, 0))

    def spec(self):
        return {**super().spec(), "vocab": self.vocab.values}

    def arrays(self):
        return {"codes": self.codes}

    @classmethod
    def restore(cls, spec, arrays):
        return cls(spec["name"], Vocabulary(spec["vocab"]), arrays["codes"].astype(np.int64))

    def __len__(self):
        return len(self.codes)


@dataclass(frozen=True, eq=False)
class MultiColumn(Column):
    """Several values per row in CSR form: row r holds codes[offsets[r]:offsets[r + 1]]."""

    kind: ClassVar[str] = "multi"
    name: str
    vocab: Vocabulary
    offsets: np.ndarray  # int64 (n + 1,)
    codes: np.ndarray  # int64 (nnz,)
    sep: str = MULTI_SEP

    @staticmethod
    def _split(series: pd.Series, sep: str) -> tuple[np.ndarray, np.ndarray]:
        """Row lengths and the concatenated values; empty pieces (a|, ||) are dropped."""
        text, _ = _texts(series)
        pieces = pd.Series(text).str.split(sep, regex=False).explode().str.strip()
        keep = pieces.notna().to_numpy() & (pieces.to_numpy(dtype=object) != "")
        lengths = np.bincount(pieces.index.to_numpy()[keep], minlength=len(text))
        return lengths, pieces.to_numpy(dtype=object)[keep]

    @classmethod
    def fit(cls, name, series, fit_mask, *, source, sep, min_count):
        lengths, values = cls._split(series, sep)
        in_fit = np.repeat(fit_mask, lengths)
        vocab = Vocabulary.build(values[in_fit], min_count)
        return cls(name, vocab, np.zeros(1, np.int64), np.zeros(0, np.int64), sep).encode(
            series, source)

    def encode(self, series, source):
        lengths, values = self._split(series, self.sep)
        return MultiColumn(self.name, self.vocab, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                           self.vocab.encode(values), self.sep)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        safe = np.where(rows < 0, 0, rows)
        if len(self):
            lengths, starts = np.where(rows < 0, 0, self.lengths[safe]), self.offsets[safe]
        else:  # an empty column: every row asked for is a missing one
            lengths = starts = np.zeros(len(rows), np.int64)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return MultiColumn(self.name, self.vocab, offsets, self.codes[positions], self.sep)

    def padded(self) -> np.ndarray:
        """(n, L) int64 codes, L the longest row (at least 1), padded with 0: the form
        `nn.EmbeddingBag(..., padding_idx=0)` reads, gatherable by row on any device."""
        width = max(1, int(self.lengths.max(initial=0)))
        out = np.zeros((len(self), width), dtype=np.int64)
        rows = np.repeat(np.arange(len(self)), self.lengths)
        out[rows, np.arange(len(self.codes)) - self.offsets[rows]] = self.codes
        return out

    def spec(self):
        return {**super().spec(), "vocab": self.vocab.values, "sep": self.sep}

    def arrays(self):
        return {"offsets": self.offsets, "codes": self.codes}

    @classmethod
    def restore(cls, spec, arrays):
        offsets, codes = arrays["offsets"].astype(np.int64), arrays["codes"].astype(np.int64)
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(codes) or np.any(
                np.diff(offsets) < 0):
            raise DataError(f"column {spec['name']!r}: offsets do not describe its codes")
        return cls(spec["name"], Vocabulary(spec["vocab"]), offsets, codes, spec.get("sep", MULTI_SEP))

    def __len__(self):
        return len(self.offsets) - 1


@dataclass(frozen=True, eq=False)
class NumericColumn(Column):
    """Standardised values (x - mean) / std; missing values are 0 and flagged."""

    kind: ClassVar[str] = "numeric"
    name: str
    mean: float
    std: float
    values: np.ndarray  # float32 (n,)
    missing: np.ndarray  # bool (n,)

    @classmethod
    def fit(cls, name, series, fit_mask, *, source, sep, min_count):
        raw, missing = _floats(series, source, name)
        use = fit_mask & ~missing
        mean = float(raw[use].mean()) if use.any() else 0.0
        std = float(raw[use].std()) if use.any() else 1.0
        return cls(name, mean, std if std > 0 else 1.0, np.zeros(0, np.float32),
                   np.zeros(0, bool)).encode(series, source)

    def encode(self, series, source):
        raw, missing = _floats(series, source, self.name)
        values = np.where(missing, 0.0, (raw - self.mean) / self.std).astype(np.float32)
        return NumericColumn(self.name, self.mean, self.std, values, missing)

    def take(self, rows):
        return NumericColumn(self.name, self.mean, self.std, _pick(self.values, rows, 0.0),
                             _pick(self.missing, rows, True))

    def spec(self):
        return {**super().spec(), "mean": self.mean, "std": self.std}

    def arrays(self):
        return {"values": self.values, "missing": self.missing}

    @classmethod
    def restore(cls, spec, arrays):
        return cls(spec["name"], float(spec["mean"]), float(spec["std"]),
                   arrays["values"].astype(np.float32), arrays["missing"].astype(bool))

    def __len__(self):
        return len(self.values)


@dataclass(frozen=True, eq=False)
class DenseColumn(Column):
    """A float32 vector per row (n, dim); a missing row is zeros, flagged."""

    kind: ClassVar[str] = "dense"
    name: str
    values: np.ndarray  # float32 (n, dim)
    missing: np.ndarray  # bool (n,)

    @classmethod
    def from_array(cls, name: str, values: np.ndarray, missing: np.ndarray | None = None) -> DenseColumn:
        """A dense column from a matrix, e.g. text embeddings computed by an encoder."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or not np.isfinite(values).all():
            raise DataError(f"dense column {name!r}: expected a finite 2-d matrix, "
                            f"got shape {values.shape}")
        missing = np.zeros(len(values), bool) if missing is None else np.asarray(missing, bool)
        return cls(name, values, missing)

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    @classmethod
    def fit(cls, name, series, fit_mask, *, source, sep, min_count):
        return cls._parse(name, series, source, dim=None)

    def encode(self, series, source):
        return self._parse(self.name, series, source, dim=self.dim)

    @classmethod
    def _parse(cls, name: str, series: pd.Series, source: str, dim: int | None) -> DenseColumn:
        """Vectors from list cells or from whitespace-separated numbers; errors name the row."""
        series = series.reset_index(drop=True)
        vectors = series.map(_is_vector).to_numpy(dtype=bool)
        missing = ~vectors & series.map(lambda v: v is None or str(v).strip() in ("", "nan")
                                        ).to_numpy(dtype=bool)
        present = np.flatnonzero(~missing)
        cells = [list(v) if is_vec else str(v).split()
                 for v, is_vec in zip(series.iloc[present], vectors[present], strict=True)]
        lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
        dim = dim if dim is not None else (int(lengths[0]) if len(cells) else 0)
        if (lengths != dim).any():
            at = int(np.argmax(lengths != dim))
            raise DataError(f"{source}: column {name!r} row {_row(present[at])}: {lengths[at]} "
                            f"values, expected {dim} (the column is a dense vector)")
        flat = np.concatenate([np.asarray(c) for c in cells]) if cells else np.zeros(0)
        try:
            numbers = flat.astype(np.float64)
        except (TypeError, ValueError):  # some value is not a number: find which
            numbers = pd.to_numeric(pd.Series(flat, dtype=object), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            at = int(np.argmax(bad))
            raise DataError(f"{source}: column {name!r} row {_row(present[at // dim])}: "
                            f"{show_value(flat[at].item())} is not a finite number (the column is a "
                            "dense vector)")
        values = np.zeros((len(series), dim), dtype=np.float32)
        values[present] = numbers.reshape(len(present), dim)
        return cls(name, values, missing)

    def take(self, rows):
        return DenseColumn(self.name, _pick(self.values, rows, 0.0), _pick(self.missing, rows, True))

    def spec(self):
        return {**super().spec(), "dim": self.dim}

    def arrays(self):
        return {"values": self.values, "missing": self.missing}

    @classmethod
    def restore(cls, spec, arrays):
        values = arrays["values"].astype(np.float32)
        if values.ndim != 2 or values.shape[1] != spec["dim"]:
            raise DataError(f"column {spec['name']!r}: vectors of shape {values.shape}, "
                            f"expected dim {spec['dim']}")
        return cls(spec["name"], values, arrays["missing"].astype(bool))

    def __len__(self):
        return len(self.values)


@dataclass(frozen=True, eq=False)
class TextColumn(Column):
    """Raw text per row ('' when missing), for encoders; saved as UTF-8 bytes + offsets."""

    kind: ClassVar[str] = "text"
    name: str
    values: np.ndarray  # object (n,) of str

    @classmethod
    def fit(cls, name, series, fit_mask, *, source, sep, min_count):
        return cls(name, np.zeros(0, object)).encode(series, source)

    def encode(self, series, source):
        return TextColumn(self.name, _texts(series)[0])

    def take(self, rows):
        return TextColumn(self.name, _pick(self.values, rows, ""))

    def arrays(self):
        encoded = [v.encode("utf-8") for v in self.values]
        offsets = np.r_[0, np.cumsum([len(b) for b in encoded])].astype(np.int64)
        return {"offsets": offsets, "bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8)}

    @classmethod
    def restore(cls, spec, arrays):
        data, offsets = arrays["bytes"].tobytes(), arrays["offsets"]
        values = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return cls(spec["name"], np.asarray(values, dtype=object).reshape(-1))

    def __len__(self):
        return len(self.values)


COLUMN_TYPES: dict[str, type[Column]] = {c.kind: c for c in (
    CategoricalColumn, MultiColumn, NumericColumn, DenseColumn, TextColumn)}


# ---- the table -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Feature columns whose rows follow `ids` (a user or item IdMap): row r describes ids[r].

    Build with `from_frame`; apply the learned encoding to new rows with `encode`; align to
    another id map with `reindex`; select rows with `subset`; `to(device)` for training.
    """

    ids: IdMap
    columns: dict[str, Column]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, column in self.columns.items():
            if column.name != name:
                raise DataError(f"feature column {column.name!r} stored under {name!r}")
            if len(column) != len(self.ids):
                raise DataError(f"feature column {name!r} has {len(column)} rows for "
                                f"{len(self.ids)} ids")

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_col: str, *, ids: IdMap | None = None,
                   kinds: Mapping[str, str] | None = None, fit_ids: Iterable | None = None,
                   seps: Mapping[str, str] | None = None, min_count: int = 1,
                   source: str = "frame") -> FeatureTable:
        """A table from one row per id: `id_col` plus feature columns.

        ids: rows to produce (default: the frame's ids, sorted as `IdMap.from_values` does);
            ids absent from the frame get missing rows, frame rows of other ids are dropped
            and counted in `meta`.
        kinds: column -> kind overrides (`categorical`, `multi`, `numeric`, `dense`, `text`,
            or `ignore` to leave a column out); other columns are inferred (`infer_kind`).
        seps: separators of multi-valued columns other than `|` (a column listed here is
            multi-valued), e.g. {"genre": " "} for a RecBole `token_seq` column.
        fit_ids: the ids whose rows build vocabularies and statistics (the training ids);
            default all rows. min_count: rarer values map to the unknown code.
        Errors (DataError) name `source`, the column, the 1-based data row and the value.
        """
        frame_ids = _frame_ids(frame, id_col, source)
        seps = dict(seps or {})
        kinds = _resolve_kinds(frame, id_col, {**dict.fromkeys(seps, "multi"), **(kinds or {})},
                               source)
        fit_mask = np.ones(len(frame), bool)
        if fit_ids is not None:
            fit_ids = list(fit_ids)
            fit_mask = IdMap(fit_ids).index_of(frame_ids) >= 0 if fit_ids else ~fit_mask
        if min_count < 1:
            raise DataError(f"min_count must be at least 1, got {min_count}")
        frame = frame.reset_index(drop=True)
        columns = [COLUMN_TYPES[kind].fit(name, frame[name], fit_mask, source=source,
                                          sep=seps.get(name, MULTI_SEP), min_count=min_count)
                   for name, kind in kinds.items()]
        return cls._aligned(frame_ids, columns, ids, source)

    def encode(self, frame: pd.DataFrame, id_col: str, *, ids: IdMap | None = None,
               source: str = "frame") -> FeatureTable:
        """Rows for new ids with this table's encoding (vocabularies, statistics): request-time
        features of new users, say. Columns the frame lacks are missing; extra ones ignored."""
        frame_ids = _frame_ids(frame, id_col, source)
        frame = frame.reset_index(drop=True)
        columns = []
        for name, column in self.columns.items():
            series = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
            columns.append(column.encode(series, source))
        return self._aligned(frame_ids, columns, ids, source)

    @classmethod
    def _aligned(cls, frame_ids: np.ndarray, columns: list[Column], ids: IdMap | None,
                 source: str) -> FeatureTable:
        table = cls(IdMap(frame_ids), {c.name: c for c in columns}, {"source": source})
        return table.reindex(ids if ids is not None else IdMap.from_values(frame_ids))

    def reindex(self, ids: IdMap) -> FeatureTable:
        """Rows aligned to `ids`: ids without features get missing rows (code 0, flagged)."""
        rows = self.ids.index_of(ids.ids)
        known = rows >= 0
        meta = {**self.meta, "rows_without_features": int((~known).sum()),
                "dropped_unknown_ids": int(len(self.ids) - known.sum())}
        if meta["dropped_unknown_ids"]:
            log.info("%s: features of %d ids outside the id map dropped", self.meta.get("source"),
                     meta["dropped_unknown_ids"])
        return FeatureTable(ids, {n: c.take(rows) for n, c in self.columns.items()}, meta)

    def subset(self, rows: np.ndarray) -> FeatureTable:
        """The given rows (indices into `ids`), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return FeatureTable(IdMap(self.ids.to_ids(rows)),
                            {n: c.take(rows) for n, c in self.columns.items()}, dict(self.meta))

    def with_columns(self, *columns: Column) -> FeatureTable:
        """A copy with `columns` added (or replaced by name), e.g. encoded text vectors."""
        return FeatureTable(self.ids, {**self.columns, **{c.name: c for c in columns}}, dict(self.meta))

    # ---- views --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, name: str) -> Column:
        if name not in self.columns:
            raise DataError(f"no feature column {name!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    @property
    def kinds(self) -> dict[str, str]:
        return {n: c.kind for n, c in self.columns.items()}

    def spec(self) -> list[dict]:
        """The learned encoding of every column (JSON-ready)."""
        return [c.spec() for c in self.columns.values()]

    def equals(self, other: FeatureTable) -> bool:
        """Same ids, encodings and rows (used by tests and load checks)."""
        if self.ids != other.ids or self.spec() != other.spec():
            return False
        return all(np.array_equal(a, b) for n in self.columns for a, b in zip(
            self.columns[n].arrays().values(), other.columns[n].arrays().values(), strict=True))

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}:{c.kind}" for n, c in self.columns.items())
        return f"FeatureTable(rows={len(self)}, {cols})"

    def to(self, device: str | torch.device = "cpu") -> TorchFeatures:
        """Every tensor column on `device`, for gathering batches there (no host round trip)."""
        return TorchFeatures(self, device)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """`table.json` (ids, column encodings) and `arrays.npz` (rows) in folder `path`,
        written atomically (an older table there is replaced in one step)."""
        doc = {"format": TABLE_FORMAT, "ids": self.ids.to_json(), "columns": self.spec()}
        arrays = {f"{i}.{key}": value for i, column in enumerate(self.columns.values())
                  for key, value in column.arrays().items()}
        with atomic_dir(path, marker=TABLE_FILE) as tmp:
            (tmp / TABLE_FILE).write_text(json.dumps(doc))
            with (tmp / ARRAYS_FILE).open("wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureTable:
        """A table written by `save`; no pickle. A damaged folder is a DataError naming the file."""
        path = Path(path)
        try:
            doc = json.loads((path / TABLE_FILE).read_text())
            ids, specs = IdMap.from_json(doc["ids"]), doc["columns"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path / TABLE_FILE}: not a feature table ({_reason(exc)})") from exc
        try:
            with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            columns = []
            for i, spec in enumerate(specs):
                parts = {key.split(".", 1)[1]: v for key, v in arrays.items()
                         if key.split(".", 1)[0] == str(i)}
                columns.append(COLUMN_TYPES[spec["kind"]].restore(spec, parts))
            return cls(ids, {c.name: c for c in columns}, {"source": str(path)})
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path / ARRAYS_FILE}: damaged feature arrays ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, KeyError) else text


def _frame_ids(frame: pd.DataFrame, id_col: str, source: str) -> np.ndarray:
    """The id column as normalised ids; missing or repeated ids are errors naming the row."""
    if id_col not in frame.columns:
        raise DataError(f"{source}: no id column {id_col!r} (columns are: "
                        f"{', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise DataError(f"{source}: no rows")
    column = frame[id_col].reset_index(drop=True)
    empty = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise DataError(f"{source}: column {id_col!r} row {_row(np.argmax(empty))}: missing id")
    ids = normalize_ids(column)
    repeat = first_repeat(ids)
    if repeat is not None:
        first, pos = repeat
        raise DataError(f"{source}: id {show_value(ids[pos])} appears twice in column {id_col!r} "
                        f"(rows {_row(first)} and {_row(pos)}); one row per id")
    return ids


def _resolve_kinds(frame: pd.DataFrame, id_col: str, kinds: dict[str, str],
                   source: str) -> dict[str, str]:
    """Each feature column's kind: the override, else inferred; errors name the column."""
    for name, kind in kinds.items():
        if name not in frame.columns or name == id_col:
            raise DataError(f"{source}: kinds names column {name!r}, which is not a feature "
                            f"column (columns are: {', '.join(map(str, frame.columns))})")
        if kind not in (*KINDS, IGNORE):
            raise DataError(f"{source}: column {name!r}: unknown kind {kind!r}; kinds: "
                            f"{', '.join((*KINDS, IGNORE))}")
    resolved = {str(c): kinds.get(c) or infer_kind(frame[c]) for c in frame.columns if c != id_col}
    for name, kind in resolved.items():
        if kind != IGNORE and _texts(frame[name])[1].all():
            raise DataError(f"{source}: column {name!r} is empty in every row; fill it or "
                            "remove it")
    for name, kind in resolved.items():
        if kind == "categorical" and name not in kinds:
            _warn_near_numeric(frame[name], source, name)
    resolved = {c: k for c, k in resolved.items() if k != IGNORE}
    if not resolved:
        raise DataError(f"{source}: no feature columns besides the id column {id_col!r}")
    return resolved


# ---- tensors ---------------------------------------------------------------------------------
class TorchFeatures:
    """A FeatureTable's columns as tensors on one device; `batch(rows)` gathers there.

    batch(rows) -> {name: tensor} for a LongTensor of row indices (B,):
    categorical int64 (B,); multi int64 (B, L) padded with 0 (for `nn.EmbeddingBag(size, d,
    mode="mean", padding_idx=0)`); numeric float32 (B,); dense float32 (B, dim); and, for
    numeric and dense columns, `"<name>:missing"` float32 (B,), 1 where the value was missing.
    Text columns stay out (encode them into a dense column first).
    """

    def __init__(self, table: FeatureTable, device: str | torch.device = "cpu") -> None:
        self.table = table
        self.device = torch.device(device)
        self.tensors: dict[str, torch.Tensor] = {}
        for name, column in table.columns.items():
            if isinstance(column, CategoricalColumn):
                self.tensors[name] = torch.from_numpy(column.codes)
            elif isinstance(column, MultiColumn):
                self.tensors[name] = torch.from_numpy(column.padded())
            elif isinstance(column, NumericColumn | DenseColumn):
                self.tensors[name] = torch.from_numpy(column.values)
                self.tensors[f"{name}:missing"] = torch.from_numpy(column.missing.astype(np.float32))
        self.tensors = {k: v.to(self.device) for k, v in self.tensors.items()}

    def batch(self, rows: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        return {name: tensor[rows] for name, tensor in self.tensors.items()}

    def sizes(self) -> dict[str, int]:
        """Embedding rows each categorical or multi column needs (vocabulary size + 1)."""
        return {n: c.vocab.size for n, c in self.table.columns.items()
                if isinstance(c, CategoricalColumn | MultiColumn)}


def read_features(path: str | Path, id_col: str, *, ids: IdMap | None = None,
                  fit_ids: Iterable | None = None, kinds: Mapping[str, str] | None = None,
                  text: bool = False) -> FeatureTable:
    """A FeatureTable from a CSV/TSV/Parquet file (`--item-features`, `--user-features`).

    With `text`, the file is `id_col,text` (`--item-text`): a table with one text column, `text`.
    """
    from recsys.data.io import read_table

    frame = read_table(path, [id_col, "text"] if text else [id_col])
    if text:
        if len(frame.columns) != 2:
            raise DataError(f"{path}: a text file has the columns {id_col} and text; found "
                            f"{', '.join(map(str, frame.columns))}")
        kinds = {"text": "text"}
    return FeatureTable.from_frame(frame, id_col, ids=ids, fit_ids=fit_ids, kinds=kinds,
                                   source=str(path))
