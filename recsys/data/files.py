"""Interactions from files in the toolkit's own format (what `recsys data prepare` writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.data.features import read_features, show_value
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.io import read_table
from recsys.errors import DataError

OPTIONAL_COLUMNS = {"rating_col": "rating", "time_col": "timestamp", "level_col": "level"}


def read_interactions(path: str | Path, *, user_map: IdMap | None = None,
                      item_map: IdMap | None = None,
                      level_names: Sequence[str] | None = None) -> Interactions:
    """Read a CSV/Parquet file with columns user_id, item_id[, rating][, timestamp][, level].

    `rating` is the pair's weight (summed over repeated rows). `level` holds integer levels
    1..L, or level names ordered by `level_names` (Parquet files from `recsys data prepare`
    carry the names themselves). With id maps (a model's), rows of unknown users or items are
    dropped and counted in `meta`.
    """
    frame = read_table(path, ["user_id", "item_id"])
    optional = {arg: col for arg, col in OPTIONAL_COLUMNS.items() if col in frame.columns}
    if level_names is not None and "level_col" not in optional:
        raise DataError(f"{path}: level names given but the file has no 'level' column")
    return Interactions.from_frame(frame, user_map=user_map, item_map=item_map,
                                   level_names=level_names, source=str(path), **optional)


def read_seen(path: str | Path, model, label: str) -> Interactions:
    """A model's training items from `path` (`--train` of evaluate, recommend, serve), in its id
    maps; a file with no pair of a known user and item (other data) is an error, since it
    would exclude nothing."""
    seen = read_interactions(path, user_map=model.user_map_, item_map=model.item_map_)
    if seen.nnz == 0:
        raise DataError(f"{path}: none of its pairs has a user and an item known to the model "
                        f"{label} (the training file of other data?)")
    return seen


def with_side_files(data: Interactions, *, item_features: str | Path | None = None,
                    user_features: str | Path | None = None,
                    item_text: str | Path | None = None) -> Interactions:
    """`data` with side-feature files attached (`--item-features`, `--user-features`,
    `--item-text`; ids in columns `item_id` / `user_id`).

    Vocabularies and statistics are fitted on the items that have interactions in `data` and
    on its users. Items listed in an item file but absent from `data` join the catalogue as
    items without interactions (cold-start items a feature-aware model can recommend); users
    absent from `data` are dropped and counted in the table's `meta`.
    """
    trained_items = data.item_map.to_ids(np.flatnonzero(data.item_popularity > 0))
    if user_features is not None:
        table = read_features(user_features, "user_id", fit_ids=data.user_map.ids)
        data = data.with_user_features(sharing_ids(table, data.user_map.ids, user_features, "user"))
    if item_features is not None:
        table = read_features(item_features, "item_id", fit_ids=trained_items)
        data = data.with_item_features(sharing_ids(table, trained_items, item_features, "item"),
                                       extend_catalogue=True)
    if item_text is not None:
        table = read_features(item_text, "item_id", text=True)
        data = data.with_item_text(sharing_ids(table, trained_items, item_text, "item"),
                                   extend_catalogue=True)
    return data


def sharing_ids(table, known: np.ndarray, path: str | Path, what: str):
    """Feature table `table` read from `path`, unless none of its ids is one of the data's
    (`known`): then every trained user or item would go without features, a sign of ids
    written another way (`7` vs `item7`) or of another data set's file."""
    if len(known) and (IdMap(known).index_of(table.ids.ids) >= 0).any():
        return table
    noun = "an item" if what == "item" else "a user"
    raise DataError(f"{path}: none of its {len(table)} ids is {noun} of the training data (its "
                    f"first: {show_value(table.ids.ids[0])}; the data's first: "
                    f"{show_value(known[0]) if len(known) else 'none'})")


def aligned_side_features(data: Interactions, reference: Interactions) -> Interactions:
    """`data` (a test or validation set on `reference`'s id maps before features were attached)
    with the catalogue and feature tables of `reference`, so both index items alike."""
    for name in ("item_features", "item_text"):
        table = getattr(reference, name)
        if table is not None:
            attach = data.with_item_features if name == "item_features" else data.with_item_text
            data = attach(table, extend_catalogue=True)
    if reference.user_features is not None:
        data = data.with_user_features(reference.user_features)
    return data
