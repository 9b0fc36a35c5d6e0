"""Interactions from files in the toolkit's own format (what `recsys data prepare` writes)."""

from __future__ import annotations

from pathlib import Path

from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.io import read_table

OPTIONAL_COLUMNS = {"rating_col": "rating", "time_col": "timestamp", "level_col": "level"}


def read_interactions(path: str | Path, *, user_map: IdMap | None = None,
                      item_map: IdMap | None = None) -> Interactions:
    """Read a CSV/Parquet file with columns user_id, item_id[, rating][, timestamp][, level].

    `rating` is the pair's weight (summed over repeated rows). With id maps (a model's), rows
    of unknown users or items are dropped and counted in `meta`.
    """
    frame = read_table(path, ["user_id", "item_id"])
    optional = {arg: col for arg, col in OPTIONAL_COLUMNS.items() if col in frame.columns}
    return Interactions.from_frame(frame, user_map=user_map, item_map=item_map,
                                   source=str(path), **optional)
