"""Reading event logs: CSV/Parquet tables, MovieLens releases and RecBole atomic files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import DataError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV/TSV or Parquet file; id columns keep their text as written (no float ids)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r} (use .csv, .tsv or .parquet)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if kind == "tsv" else ","
            # all text, so ids like "007" survive; validate_frame parses the numeric columns
            frame = pd.read_csv(path, sep=sep, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from exc
    if frame.empty:
        raise DataError(f"{path}: file has no rows")
    if columns:
        require_columns(frame, columns, str(path))
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (columns are: {have})")


def validate_frame(frame, source, user_col, item_col, rating_col, time_col, level_col) -> pd.DataFrame:
    """Check columns and values; the error names the column, the row and the bad value."""
    cols = [c for c in (user_col, item_col, rating_col, time_col, level_col) if c is not None]
    require_columns(frame, cols, source)
    if frame.empty:
        raise DataError(f"{source}: no rows")
    frame = frame.reset_index(drop=True)
    for col in (user_col, item_col):
        bad = frame[col].isna().to_numpy()
        if bad.any():
            raise DataError(f"{source}: column {col!r} has a missing id at row {int(np.argmax(bad))}")
    for col in (rating_col, time_col, level_col):
        if col is None:
            continue
        values = frame[col]
        if col == time_col and pd.to_numeric(values, errors="coerce").isna().any():
            parsed = pd.to_datetime(values, errors="coerce", utc=True)
            _raise_first_bad(parsed.isna().to_numpy(), values, col, source, "a time")
            frame[col] = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        _raise_first_bad(numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(float)),
                         values, col, source, "a finite number")
        if col == level_col and ((numeric < 1) | (numeric > 127) | (numeric % 1 != 0)).any():
            row = int(np.argmax(((numeric < 1) | (numeric > 127) | (numeric % 1 != 0)).to_numpy()))
            raise DataError(f"{source}: column {col!r} row {row}: level {_show(values.iloc[row])} "
                            "is not an integer in 1..127")
        frame[col] = numeric
    return frame


def _raise_first_bad(bad: np.ndarray, values: pd.Series, col: str, source: str, what: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{source}: column {col!r} row {row}: {_show(values.iloc[row])} is not {what}")


def _show(value) -> str:
    """A value as the user wrote it: strings quoted, numbers plain (no numpy type names)."""
    return repr(value) if isinstance(value, str) else str(value)


# ---- MovieLens and RecBole ---------------------------------------------------------------
def read_movielens(path: str | Path) -> pd.DataFrame:
    """Ratings of a MovieLens release as user_id, item_id, rating, timestamp.

    Accepts the release folder or its ratings file: 100K `u.data` (tab-separated), 1M/10M
    `ratings.dat` (`::`-separated), 20M/25M/latest `ratings.csv` (header userId,movieId,...).
    """
    path = Path(path)
    if path.is_dir():
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise DataError(f"{path}: no MovieLens ratings file (u.data, ratings.dat, ratings.csv)")
    names = ["user_id", "item_id", "rating", "timestamp"]
    if path.name == "u.data":
        frame = pd.read_csv(path, sep="\t", names=names, dtype={"user_id": str, "item_id": str})
    elif path.suffix == ".dat":
        frame = pd.read_csv(path, sep="::", names=names, engine="python",
                            dtype={"user_id": str, "item_id": str})
    else:
        frame = pd.read_csv(path, dtype={"userId": str, "movieId": str})
        require_columns(frame, ["userId", "movieId", "rating"], str(path))
        frame = frame.rename(columns={"userId": "user_id", "movieId": "item_id"})
    if frame.empty:
        raise DataError(f"{path}: file has no rows")
    return frame


_RECBOLE_TYPES = {"token": str, "token_seq": str, "float": float, "float_seq": str}


def read_atomic(path: str | Path) -> pd.DataFrame:
    """A RecBole atomic file (.inter/.item/.user): tab-separated, `name:type` headers.

    Column names lose their type suffix; RecBole's `user_id`/`item_id` names are kept.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if not header or header == [""]:
        raise DataError(f"{path}: file is empty")
    names, dtypes = [], {}
    for field in header:
        name, _, kind = field.partition(":")
        if kind not in _RECBOLE_TYPES:
            raise DataError(f"{path}: header field {field!r} has no known RecBole type "
                            f"({', '.join(_RECBOLE_TYPES)})")
        names.append(name)
        dtypes[name] = _RECBOLE_TYPES[kind]
    frame = pd.read_csv(path, sep="\t", skiprows=1, names=names, dtype=dtypes,
                        keep_default_na=False, na_values={n: [""] for n, t in dtypes.items() if t is float})
    if frame.empty:
        raise DataError(f"{path}: file has no rows")
    return frame


def read_events(path: str | Path) -> pd.DataFrame:
    """Read any supported event log, picking the reader by file name."""
    path = Path(path)
    if path.is_dir() or path.name in ("u.data", "ratings.dat") or (
        path.name == "ratings.csv" and _has_movielens_header(path)
    ):
        return read_movielens(path)
    if path.suffix in (".inter", ".item", ".user"):
        return read_atomic(path)
    return read_table(path)


def _has_movielens_header(path: Path) -> bool:
    with path.open(encoding="utf-8") as fh:
        return fh.readline().startswith("userId,movieId")
