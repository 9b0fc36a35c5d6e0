"""Interactions: the user x item CSR matrix every model, metric and job works on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureTable
from recsys.data.idmap import IdMap
from recsys.data.levels import (
    default_names,
    encode_levels,
    level_counts,
    parse_levels,
    parse_thresholds,
    rating_levels,
    threshold_names,
)
from recsys.data.propensity import Propensity
from recsys.errors import DataError

log = logging.getLogger("recsys")

Duplicates = Literal["sum", "max"]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Immutable users x items feedback.

    matrix: CSR float32 weights (counts, or ratings used as weights); rows are users.
    levels: optional CSR int8 ordinal feedback level (1..L) on the same pattern as `matrix`.
    level_names: the names of levels 1..L, weakest first (default '1'..'L'); None without levels.
    timestamps: optional CSR float64 time of the latest event, same pattern as `matrix`.
    meta: provenance (source, rules applied, rows dropped and why).
    propensity: optional exposure propensities for unbiased losses and metrics; derived
    copies (splits, subsets) do not carry it, since it belongs to one training set.
    user_features, item_features, item_text: optional `FeatureTable`s whose rows follow
    `user_map` / `item_map` (attach them with `with_user_features` etc.); splits and subsets
    carry them along. The item catalogue may be wider than the items with interactions: items
    known only from their features are columns without pairs (`extend_catalogue=True`).
    """

    matrix: sp.csr_matrix
    user_map: IdMap
    item_map: IdMap
    levels: sp.csr_matrix | None = None
    timestamps: sp.csr_matrix | None = None
    meta: dict = field(default_factory=dict)
    propensity: Propensity | None = None
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None
    item_text: FeatureTable | None = None
    level_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        shape = (len(self.user_map), len(self.item_map))
        if self.matrix.shape != shape:
            raise DataError(f"matrix shape {self.matrix.shape} does not match id maps {shape}")
        for name in ("levels", "timestamps"):
            other = getattr(self, name)
            if other is not None and (other.nnz != self.matrix.nnz or other.shape != shape):
                raise DataError(f"{name} must have the same sparsity pattern as the matrix")
        for name, ids in (("user_features", self.user_map), ("item_features", self.item_map),
                          ("item_text", self.item_map)):
            table = getattr(self, name)
            if table is not None and table.ids != ids:
                raise DataError(f"{name} rows do not follow the {name.split('_')[0]} id map "
                                "(attach tables with with_user_features / with_item_features)")
        if self.levels is None:
            object.__setattr__(self, "level_names", None)
            return
        top = int(self.levels.data.max()) if self.levels.nnz else 0
        names = self.level_names or default_names(top)
        object.__setattr__(self, "level_names", tuple(names))
        if top > len(names) or (self.levels.nnz and self.levels.data.min() < 1):
            raise DataError(f"levels must lie in 1..{len(names)} ({'<'.join(names)})")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rating_col: str | None = None,
        time_col: str | None = None,
        level_col: str | None = None,
        level_names: Sequence[str] | None = None,
        levels_from_rating: Sequence[float] | None = None,
        min_rating: float | None = None,
        duplicates: Duplicates = "sum",
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        source: str = "frame",
    ) -> Interactions:
        """Build from an event log, one row per event.

        Weight rule: each row weighs its rating when `rating_col` is given, else 1. With
        `min_rating`, rows rated below it are dropped and the rest weigh 1 (implicit positives).
        Repeated (user, item) rows combine by `duplicates`: "sum" (event counts) or "max";
        levels and timestamps always take the max (highest level reached, latest event).
        Levels (see `recsys.data.levels`) come from `level_col` (integers 1..L, or names
        ordered by `level_names`), or from `rating_col` through `levels_from_rating`
        thresholds: rows below the first are dropped and counted, the rest weigh 1.
        With given id maps (e.g. a test file mapped onto a model's training ids), rows whose
        user or item is not in them are dropped and counted in `meta`.
        """
        from recsys.data.io import check_weights, require_columns, validate_frame

        if min_rating is not None and (rating_col is None or not np.isfinite(min_rating)):
            raise DataError(f"min_rating must be a finite number used with a rating column, "
                            f"got {min_rating} (rating column: {rating_col})")
        frame = validate_frame(frame, source, user_col, item_col, rating_col, time_col)
        meta: dict = {"source": source, "rows": len(frame), "duplicates": duplicates}
        if duplicates not in ("sum", "max"):
            raise DataError(f"duplicates must be 'sum' or 'max', got {duplicates!r}")

        level_values = None
        if level_names is not None:
            if level_col is None:
                raise DataError(f"{source}: level names given without a level column")
            level_names = parse_levels(level_names)
        if levels_from_rating is not None:
            if rating_col is None or level_col is not None or min_rating is not None:
                raise DataError(f"{source}: levels from rating need a rating column, and "
                                "neither a level column nor a minimum rating")
            thresholds = parse_thresholds(levels_from_rating)
            level_values = rating_levels(frame[rating_col].to_numpy(np.float64), thresholds)
            level_names, min_rating = threshold_names(thresholds), thresholds[0]
            meta["levels_from_rating"] = list(thresholds)
        elif level_col is not None:
            require_columns(frame, [level_col], source)
            level_values, level_names = encode_levels(frame[level_col], level_names, level_col,
                                                      source)

        if rating_col is not None and min_rating is not None:
            ratings = frame[rating_col].to_numpy()
            keep = ratings >= min_rating
            if not keep.any():
                raise DataError(f"{source}: no row is rated at least {min_rating:g}, nothing is "
                                f"left (column {rating_col!r} ranges from {ratings.min():g} to "
                                f"{ratings.max():g})")
            meta.update(min_rating=min_rating, dropped_below_min_rating=int((~keep).sum()))
            if (~keep).any():
                log.info("%s: %d rows rated below %s dropped", source, (~keep).sum(), min_rating)
            frame = frame.loc[keep]
            if level_values is not None:
                level_values = level_values[keep]
            weights = np.ones(len(frame), dtype=np.float32)
        elif rating_col is not None:
            weights = frame[rating_col].to_numpy(dtype=np.float32)
            check_weights(frame[rating_col].to_numpy(), frame[rating_col], rating_col, source)
        else:
            weights = np.ones(len(frame), dtype=np.float32)

        user_map = user_map or IdMap.from_values(frame[user_col])
        item_map = item_map or IdMap.from_values(frame[item_col])
        users = user_map.index_of(frame[user_col])
        items = item_map.index_of(frame[item_col])
        known = (users >= 0) & (items >= 0)
        if not known.all():
            meta.update(
                dropped_unknown_user_rows=int((users < 0).sum()),
                dropped_unknown_item_rows=int(((users >= 0) & (items < 0)).sum()),
                dropped_unknown_users=int(pd.unique(frame[user_col].to_numpy()[users < 0]).size),
            )
            log.info(
                "%s: %d rows with users and %d with items unknown to the id map dropped",
                source, meta["dropped_unknown_user_rows"], meta["dropped_unknown_item_rows"],
            )
        users, items, weights = users[known], items[known], weights[known]
        shape = (len(user_map), len(item_map))

        def build(values: np.ndarray, how: Duplicates, dtype) -> sp.csr_matrix:
            return _aggregate(users, items, values, shape, how).astype(dtype)

        matrix = build(weights, duplicates, np.float32)
        meta["pairs"] = int(matrix.nnz)
        meta["duplicate_rows_combined"] = int(known.sum() - matrix.nnz)
        levels = timestamps = None
        if level_values is not None:
            levels = build(level_values[known].astype(np.float64), "max", np.int8)
            meta["levels"] = level_counts(levels, level_names)
        if time_col is not None:
            ts = frame[time_col].to_numpy()[known].astype(np.float64)
            timestamps = build(ts, "max", np.float64)
        return cls(matrix, user_map, item_map, levels, timestamps, meta,
                   level_names=tuple(level_names) if levels is not None else None)

    def with_pairs(self, rows: np.ndarray, cols: np.ndarray, keep: np.ndarray, **meta) -> Interactions:
        """A copy holding only the stored entries selected by boolean `keep` (COO order)."""
        coo_data = [self.matrix.data, *(m.data for m in (self.levels, self.timestamps) if m is not None)]
        r, c = rows[keep], cols[keep]
        shape = self.matrix.shape
        mats = [sp.csr_matrix((d[keep], (r, c)), shape=shape) for d in coo_data]
        for m in mats:
            m.sort_indices()
        levels = mats[1] if self.levels is not None else None
        timestamps = mats[-1] if self.timestamps is not None else None
        return replace(self, matrix=mats[0], levels=levels, timestamps=timestamps,
                       meta={**self.meta, **meta}, propensity=None)

    def subset(self, users: np.ndarray | None = None, items: np.ndarray | None = None) -> Interactions:
        """Restrict to the given user and item indices, re-indexing the id maps."""
        users = np.arange(self.n_users) if users is None else np.asarray(users)
        items = np.arange(self.n_items) if items is None else np.asarray(items)

        def cut(m: sp.csr_matrix | None) -> sp.csr_matrix | None:
            return None if m is None else m[users][:, items].tocsr()

        def rows(table: FeatureTable | None, index: np.ndarray) -> FeatureTable | None:
            return None if table is None else table.subset(index)

        umap = IdMap(self.user_map.to_ids(users))
        imap = IdMap(self.item_map.to_ids(items))
        return Interactions(cut(self.matrix), umap, imap, cut(self.levels), cut(self.timestamps),
                            dict(self.meta), level_names=self.level_names,
                            user_features=rows(self.user_features, users),
                            item_features=rows(self.item_features, items),
                            item_text=rows(self.item_text, items))

    # ---- side features ------------------------------------------------------------------
    def with_user_features(self, table: FeatureTable) -> Interactions:
        """A copy carrying `table` re-indexed to the users (users without a row get missing
        features; rows of unknown users are dropped and counted in `table.meta`)."""
        return replace(self, user_features=self._aligned(table, self.user_map, "user"))

    def with_item_features(self, table: FeatureTable, *, extend_catalogue: bool = False) -> Interactions:
        """A copy carrying item features `table`.

        With `extend_catalogue`, items of `table` that have no interactions join the item map
        as new columns without pairs, after the existing ones (indices of known items do not
        change), so cold-start items can be scored and recommended. Without it, their rows are
        dropped and counted in `table.meta`.
        """
        data = self._extended(table) if extend_catalogue else self
        return replace(data, item_features=data._aligned(table, data.item_map, "item"))

    def with_item_text(self, table: FeatureTable, *, extend_catalogue: bool = False) -> Interactions:
        """A copy carrying the items' raw text (a table with one text column), like
        `with_item_features`."""
        data = self._extended(table) if extend_catalogue else self
        return replace(data, item_text=data._aligned(table, data.item_map, "item"))

    @staticmethod
    def _aligned(table: FeatureTable, ids: IdMap, what: str) -> FeatureTable:
        table = table.reindex(ids)
        if table.meta["rows_without_features"]:
            log.info("%s: %d of %d %ss have no features", table.meta.get("source"),
                     table.meta["rows_without_features"], len(ids), what)
        return table

    def _extended(self, table: FeatureTable) -> Interactions:
        """The item catalogue widened by the ids of `table` it lacks (columns without pairs)."""
        new = table.ids.ids[self.item_map.index_of(table.ids.ids) < 0]
        if len(new) == 0:
            return self
        if self.item_map.is_integer != table.ids.is_integer:
            raise DataError(f"{table.meta.get('source', 'item features')}: item ids such as "
                            f"{new.tolist()[0]!r} are {'integers' if table.ids.is_integer else 'text'}, "
                            f"the interactions' item ids are not")
        if self.propensity is not None:
            raise DataError("attach item features before propensities: the propensities do not "
                            "cover the items the features add")
        item_map = IdMap(np.concatenate([self.item_map.ids, new]))
        shape = (self.n_users, len(item_map))

        def widen(m: sp.csr_matrix | None) -> sp.csr_matrix | None:
            return None if m is None else sp.csr_matrix((m.data, m.indices, m.indptr), shape=shape)

        tables = {name: None if t is None else t.reindex(item_map)
                  for name, t in (("item_features", self.item_features), ("item_text", self.item_text))}
        return replace(self, matrix=widen(self.matrix), item_map=item_map, levels=widen(self.levels),
                       timestamps=widen(self.timestamps), **tables,
                       meta={**self.meta, "items_without_pairs_added": int(
                           self.meta.get("items_without_pairs_added", 0) + len(new))})

    def with_propensity(self, propensity: Propensity) -> Interactions:
        """A copy carrying `propensity` (checked against the matrix shape)."""
        if propensity.item is not None and len(propensity.item) != self.n_items:
            raise DataError(f"{len(propensity.item)} item propensities for {self.n_items} items")
        if propensity.pair is not None and propensity.pair.shape != self.matrix.shape:
            raise DataError(f"pair propensities of shape {propensity.pair.shape} for a "
                            f"{self.matrix.shape} matrix")
        return replace(self, propensity=propensity)

    # ---- views ---------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of users who interacted with each item (aligned to item indices)."""
        return np.bincount(self.matrix.indices, minlength=self.n_items).astype(np.int64)

    @cached_property
    def user_degree(self) -> np.ndarray:
        return np.diff(self.matrix.indptr).astype(np.int64)

    @cached_property
    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) index arrays of all stored pairs, in CSR order."""
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), self.user_degree)
        return rows, self.matrix.indices.astype(np.int64)

    @cached_property
    def edge_index(self) -> torch.Tensor:
        """Bipartite edge_index for torch-geometric: items are offset by n_users."""
        rows, cols = self.coo
        u = torch.from_numpy(rows)
        i = torch.from_numpy(cols) + self.n_users
        return torch.stack([torch.cat([u, i]), torch.cat([i, u])])

    def to_frame(self) -> pd.DataFrame:
        """One row per stored pair with external ids: user_id, item_id, rating[, timestamp][, level]."""
        rows, cols = self.coo
        out = {
            "user_id": self.user_map.to_ids(rows),
            "item_id": self.item_map.to_ids(cols),
            "rating": self.matrix.data.astype(np.float32),
        }
        if self.timestamps is not None:
            out["timestamp"] = self.timestamps.data
        if self.levels is not None:
            out["level"] = self.levels.data.astype(np.int8)
            if self.level_names != default_names(len(self.level_names)):
                # named levels travel as an ordered categorical (kept by Parquet files)
                out["level"] = pd.Categorical.from_codes(out["level"] - 1, self.level_names,
                                                         ordered=True)
        return pd.DataFrame(out)

    def __repr__(self) -> str:
        extras = [n for n in ("levels", "timestamps", "user_features", "item_features", "item_text")
                  if getattr(self, n) is not None]
        return (f"Interactions(users={self.n_users}, items={self.n_items}, pairs={self.nnz}"
                + (f", with {'+'.join(extras)}" if extras else "") + ")")


def _aggregate(rows, cols, values, shape, how: Duplicates) -> sp.csr_matrix:
    """CSR from COO with repeated (row, col) pairs combined by sum or max."""
    if how == "sum":
        m = sp.csr_matrix((values, (rows, cols)), shape=shape, dtype=np.float64)
        m.sum_duplicates()
        return m
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.lexsort((values, key))  # within a key, the max comes last
    key, values = key[order], values[order]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    key, values = key[last], values[last]
    m = sp.csr_matrix((values, (key // shape[1], key % shape[1])), shape=shape, dtype=np.float64)
    m.sort_indices()
    return m
