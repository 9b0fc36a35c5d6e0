"""Reading event logs: CSV/TSV/Parquet tables, MovieLens releases and RecBole atomic files.

Text files are read strictly and every cell as text, so ids keep what was written (`007`,
`NA` and `null` are ids like any other; only an empty cell is missing). Every fault is one
DataError naming the file and the 1-based data row (header and blank lines not counted),
and for a bad value also the column and the value.
"""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recsys.errors import DataError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
SHOWN_CHARS = 40  # a bad value is shown up to this many characters


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV/TSV (header on the first line) or Parquet file; text cells stay text."""
    path = _existing_file(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r} (use .csv, .tsv or .parquet)")
    if kind == "parquet":
        frame = _read_parquet(path)
    else:
        frame = read_delimited(path, "\t" if kind == "tsv" else ",")
    if columns:
        require_columns(frame, columns, str(path))
    return frame


def read_delimited(path: str | Path, sep: str, names: list[str] | None = None) -> pd.DataFrame:
    """Every cell of a delimited text file as text.

    names: the column names of a file without a header; None reads them from the first line.
    `sep` may be one character or `::` (MovieLens 1M/10M). Errors: a row with another number
    of fields than the header, a header with a repeated column name or repeated as a row
    (files concatenated), content that is not UTF-8 text, a file without data rows.
    """
    path = _existing_file(path)
    if names is not None:
        return _parse(path, sep, list(names), skip=0)
    header = _header(path, sep)
    return _parse(path, sep, header, skip=1, header_cells=header)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _header(path: Path, sep: str) -> list[str]:
    with path.open("rb") as fh:
        raw = fh.readline()
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: the header is not UTF-8 text (a binary file?)") from None
    if not line.strip():
        raise DataError(f"{path}: the first line is empty; expected the header")
    return next(csv.reader([line], delimiter=sep))


def check_names(names: list[str], source: str) -> None:
    """Column names must be unique: a second `rating` column is never silently ignored."""
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{source}: column name {name!r} appears twice in the header")
        seen.add(name)


def _parse(path: Path, sep: str, names: list[str], skip: int,
           header_cells: list[str] | None = None) -> pd.DataFrame:
    check_names(names, str(path))
    # `::` is read as ':' with an empty column between fields, then those are checked
    double = sep == "::"
    columns = ([f"\0{i}" if i % 2 else names[i // 2] for i in range(2 * len(names) - 1)]
               if double else names)
    _check_utf8(path, skip)
    table, bad = _arrow_csv(path, sep[0], columns, skip, use_threads=True)
    if bad:  # the multi-threaded reader does not number rows: find the first bad one again
        _, bad = _arrow_csv(path, sep[0], columns, skip, use_threads=False)
        row = bad[0]
        fields = (row.actual_columns + 1) // 2 if double else row.actual_columns
        raise DataError(f"{path}: row {row.number - skip}: {fields} field(s), expected "
                        f"{len(names)} separated by {sep!r}: {_show(row.text)}")
    _check_text(table, path)
    frame = table.to_pandas()
    if double:
        spacers = frame[columns[1::2]].ne("").any(axis=1).to_numpy()
        if spacers.any():
            row = int(np.argmax(spacers))
            raise DataError(f"{path}: row {row + 1}: fields must be separated by '::', "
                            f"found a single ':'")
        frame = frame[names]
    if frame.empty:
        raise DataError(f"{path}: file has no rows")
    if header_cells is not None:
        repeated = frame.isin(header_cells).all(axis=1).to_numpy()
        if repeated.any():
            row = int(np.argmax(repeated)) + 1
            raise DataError(f"{path}: row {row} repeats the header "
                            f"{sep.join(header_cells)!r} (files concatenated?)")
    return frame


def _arrow_csv(path: Path, sep: str, columns: list[str], skip: int, *, use_threads: bool):
    bad = []

    def invalid(row) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=columns, skip_rows=skip,
                                            use_threads=use_threads),
            parse_options=pa_csv.ParseOptions(delimiter=sep, invalid_row_handler=invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    return table, bad


def _check_utf8(path: Path, skip: int) -> None:
    """The whole file must be UTF-8 text: a binary file is one error naming its first bad row."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as fh:
        try:
            while block := fh.read(1 << 24):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pass
        else:
            return
        fh.seek(0)
        row = -skip
        for line in fh:  # an error path: find the row with a plain loop
            row += bool(line.strip())
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                break
    raise DataError(f"{path}: row {row} is not UTF-8 text (a binary file?)")


def _check_text(table: pa.Table, path: Path) -> None:
    """NUL characters mean binary content read as text."""
    for column in table.columns:
        nul = pc.match_substring(column, "\0").to_numpy(zero_copy_only=False)
        if nul.any():
            raise DataError(f"{path}: row {int(np.argmax(nul)) + 1} holds binary content "
                            "(a NUL byte), not text")


def _read_parquet(path: Path) -> pd.DataFrame:
    check_names(_parquet_call(pq.read_schema, path).names, str(path))
    frame = _parquet_call(pd.read_parquet, path)
    if frame.empty:
        raise DataError(f"{path}: file has no rows")
    return frame


def _parquet_call(read, path: Path):
    try:
        return read(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (columns are: {have})")


# ---- values ------------------------------------------------------------------------------
def validate_frame(frame, source, user_col, item_col, rating_col, time_col) -> pd.DataFrame:
    """Check columns and values and parse numbers and times (seconds since 1970).

    The error names the column, the 1-based row and the bad value. A level column is checked
    where it is encoded (`recsys.data.levels.encode_levels`).
    """
    cols = [c for c in (user_col, item_col, rating_col, time_col) if c is not None]
    check_names([str(c) for c in frame.columns], source)
    if user_col == item_col:
        raise DataError(f"{source}: the user and item columns must differ, both are {user_col!r}")
    require_columns(frame, cols, source)
    if frame.empty:
        raise DataError(f"{source}: no rows")
    frame = frame.reset_index(drop=True)
    for col in (user_col, item_col):
        check_ids(frame[col], col, source)
    if rating_col is not None:
        frame[rating_col] = parse_numbers(frame[rating_col], rating_col, source)
    if time_col is not None:
        frame[time_col] = parse_times(frame[time_col], time_col, source)
    return frame


# the kinds of column (pandas.api.types.infer_dtype) that hold ids: integers or text
_ID_KINDS = {"string", "integer", "mixed-integer", "floating", "empty"}


def check_ids(values: pd.Series, col: str, source: str) -> None:
    """Ids are integers or text; a missing or empty cell is an error, `NA` is an id."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind not in _ID_KINDS:  # an error path: find the first value of another kind
        ok = values.map(lambda v: v is None or v is pd.NA or (
            isinstance(v, str | int | float | np.integer | np.floating)
            and not isinstance(v, bool | np.bool_))).to_numpy(bool)
        raise_first_bad(~ok, values, col, source, f"an id (ids are integers or text; the "
                         f"column holds {kind} values)")
    raise_first_bad(_missing(values), values, col, source, "an id")


def parse_numbers(values: pd.Series, col: str, source: str) -> np.ndarray:
    """Finite float64 numbers; text cells are parsed, anything else is an error."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    raise_first_bad(~np.isfinite(numeric), values, col, source, "a finite number")
    return numeric


def parse_times(values: pd.Series, col: str, source: str) -> np.ndarray:
    """Seconds since 1970 (UTC) from numbers or ISO 8601 times; the first value decides which."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = pd.to_datetime(values, utc=True)
    else:
        missing = _missing(values)
        raise_first_bad(missing, values, col, source, "a time")
        if not np.isnan(pd.to_numeric(values.iloc[:1], errors="coerce").iloc[0]):
            return parse_numbers(values, col, source)
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    raise_first_bad(parsed.isna().to_numpy(), values, col, source,
                     "a time (a number, or ISO 8601 like the first value)")
    return ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(np.float64)


def check_weights(weights: np.ndarray, values: pd.Series, col: str, source: str) -> None:
    """Rows are positive feedback: a weight <= 0 (a dislike) never feeds a model or a metric."""
    raise_first_bad(weights <= 0, values, col, source,
                     "a positive weight (weights must be > 0; to keep only the rows rated at "
                     "least X, as positives, give --min-rating X)")


def _missing(values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        missing = missing | (values.astype(object) == "").to_numpy(bool)
    return missing


def raise_first_bad(bad: np.ndarray, values: pd.Series, col: str, source: str, what: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        value = values.iloc[row]
        detail = (f"empty cell, expected {what}" if _is_missing(value)
                  else f"{_show(value)} is not {what}")
        raise DataError(f"{source}: column {col!r} row {row + 1}: {detail}")


def _is_missing(value) -> bool:
    return isinstance(value, str) and value == "" or (np.ndim(value) == 0 and pd.isna(value))


def _show(value) -> str:
    """A value as the user wrote it: strings quoted, numbers plain (no numpy type names)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        text = format(value, ".15g")  # -1.0 parsed from "-1" shows as -1
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


# ---- MovieLens and RecBole ---------------------------------------------------------------
MOVIELENS_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


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
    if path.name == "u.data":
        frame = read_delimited(path, "\t", MOVIELENS_COLUMNS)
    elif path.suffix == ".dat":
        frame = read_delimited(path, "::", MOVIELENS_COLUMNS)
    else:
        frame = read_delimited(path, ",")
        require_columns(frame, ["userId", "movieId", "rating", "timestamp"], str(path))
        frame = frame.rename(columns={"userId": "user_id", "movieId": "item_id"})
    for col in ("rating", "timestamp"):
        frame[col] = parse_numbers(frame[col], col, str(path))
    return frame


_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: str | Path) -> pd.DataFrame:
    """A RecBole atomic file (.inter/.item/.user): tab-separated, `name:type` headers.

    Column names lose their type suffix; `float` columns become numbers (an empty cell is
    missing, anything else that is not a number is an error); the others stay text.
    """
    path = _existing_file(path)
    header = _header(path, "\t")
    names, kinds = [], []
    for field in header:
        name, _, kind = field.partition(":")
        if kind not in _RECBOLE_TYPES:
            raise DataError(f"{path}: header field {field!r} has no known RecBole type "
                            f"({', '.join(_RECBOLE_TYPES)})")
        names.append(name)
        kinds.append(kind)
    frame = _parse(path, "\t", names, skip=1, header_cells=header)
    for name, kind in zip(names, kinds, strict=True):
        if kind == "float":
            values = frame[name]
            numbers = pd.to_numeric(values, errors="coerce")
            raise_first_bad((numbers.isna() & (values != "")).to_numpy(), values, name,
                             str(path), "a number")
            frame[name] = numbers.to_numpy(np.float64, na_value=np.nan)
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
    with path.open("rb") as fh:
        return fh.readline().lstrip(b"\xef\xbb\xbf").startswith(b"userId,movieId")
