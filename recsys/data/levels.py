"""Graded implicit feedback: ordered level names and the level column of an event log.

A level is an integer 1..L (1 the weakest signal, e.g. a view; L the strongest, e.g. a
purchase); each level implies the ones below it. Levels come from an integer column, from
event names put in order (`view<cart<purchase`), or from rating thresholds (`3,4,5`: a rating
of 3 is level 1, 4 is level 2, 5 and above level 3, below 3 is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.io import raise_first_bad
from recsys.errors import DataError

MAX_LEVEL = 127  # levels are stored as int8


def parse_levels(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Level names, weakest first, from 'view<cart<purchase' or a sequence of names."""
    names = tuple(s.strip() for s in (spec.split("<") if isinstance(spec, str) else spec))
    if not names or any(not n for n in names):
        raise DataError(f"levels {spec!r}: expected names weakest first, e.g. 'view<cart<purchase'")
    if len(set(names)) != len(names):
        raise DataError(f"levels {spec!r}: a name appears twice")
    if len(names) > MAX_LEVEL:
        raise DataError(f"levels {spec!r}: at most {MAX_LEVEL} levels")
    return names


def default_names(n_levels: int) -> tuple[str, ...]:
    """Names of unnamed levels: '1', '2', ..."""
    return tuple(str(k) for k in range(1, n_levels + 1))


def parse_thresholds(spec: str | Sequence[float]) -> tuple[float, ...]:
    """Rating thresholds, strictly increasing, from '3,4,5' or a sequence of numbers."""
    try:
        values = tuple(float(x) for x in (spec.split(",") if isinstance(spec, str) else spec))
    except ValueError:
        raise DataError(f"levels from rating {spec!r}: expected increasing numbers, "
                        "e.g. 3,4,5") from None
    if not values or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise DataError(f"levels from rating {spec!r}: expected increasing numbers, e.g. 3,4,5")
    if len(values) > MAX_LEVEL:
        raise DataError(f"levels from rating {spec!r}: at most {MAX_LEVEL} thresholds")
    return values


def threshold_names(thresholds: Sequence[float]) -> tuple[str, ...]:
    """Level names for rating thresholds: 'rating_3', 'rating_4.5', ..."""
    return tuple(f"rating_{t:g}" for t in thresholds)


def rating_levels(ratings: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Level of each rating: how many thresholds it reaches (0 = below the first, dropped)."""
    return np.searchsorted(np.asarray(thresholds), ratings, side="right").astype(np.int8)


def encode_levels(values: pd.Series, names: Sequence[str] | None, column: str,
                  source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer levels (int8, 1..L) and their names from a level column.

    The column holds integers 1..L, or level names (given in `names`, weakest first), or is
    an ordered categorical (as `recsys data prepare` writes it), whose categories are the
    names. Without `names`, integer levels are named '1'..'L' with L the largest level.
    Errors name the source, the column, the row (1-based, in file order) and the value.
    """
    values = values.reset_index(drop=True)
    if isinstance(values.dtype, pd.CategoricalDtype):
        if not values.dtype.ordered:
            raise DataError(f"{source}: column {column!r} is categorical but not ordered")
        stored = parse_levels([str(c) for c in values.dtype.categories])
        if names is not None and tuple(names) != stored:
            raise DataError(f"{source}: column {column!r} has levels {'<'.join(stored)}, "
                            f"expected {'<'.join(names)}")
        codes = values.cat.codes.to_numpy()
        raise_first_bad(codes < 0, values, column, source, f"a level of {'<'.join(stored)}")
        return (codes + 1).astype(np.int8), stored

    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    is_int = np.isfinite(numeric) & (numeric % 1 == 0)
    if names is not None and not is_int.all():
        lookup = {name: k for k, name in enumerate(names, start=1)}
        codes = values.astype(str).map(lookup)
        if codes.isna().any():
            raise_first_bad(codes.isna().to_numpy(), values, column, source,
                            f"a level of {'<'.join(names)}")
        return codes.to_numpy(dtype=np.int8), tuple(names)

    top = len(names) if names is not None else MAX_LEVEL
    bad = ~is_int | (numeric < 1) | (numeric > top)
    hint = (f"a level in 1..{top} ({'<'.join(names)})" if names is not None
            else f"an integer level in 1..{MAX_LEVEL} (for named levels give them in order, "
                 "e.g. --levels 'view<cart<purchase')")
    raise_first_bad(bad, values, column, source, hint)
    levels = numeric.astype(np.int8)
    return levels, tuple(names) if names is not None else default_names(int(levels.max()))


def level_counts(levels: sp.csr_matrix | None, names: Sequence[str]) -> dict[str, int]:
    """Number of (user, item) pairs at each level, by name, weakest first."""
    if levels is None:
        return {}
    counts = np.bincount(levels.data.astype(np.int64), minlength=len(names) + 1)[1:]
    return {name: int(c) for name, c in zip(names, counts, strict=True)}

