"""The in-memory scoring engine behind the endpoint: one loaded model, ready to answer.

An Engine never changes after it is built; a reload builds a new one and swaps the reference,
so a request sees either the old model or the new one, never a mix.

Fast path for factor models: one matrix-vector product over the candidate items, the user's
seen items masked in place through the CSR row, then argpartition for the top k. Ids are
looked up in dicts built once at load time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.idmap import CANONICAL_INT
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender
from recsys.models.factor import FactorModel

Id = int | str
BLOCK_SCORES = 1 << 22  # scores per block of a batch request (16 MB of float32)


class RequestError(RecsysError):
    """A request the engine cannot answer as asked (answered with HTTP 4xx)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ranked:
    """A ranked answer for one user (or item): external ids best first, with their scores."""

    item_ids: list
    scores: list[float]
    fallback: bool = False
    unknown_item_ids: list = field(default_factory=list)


class _Lookup:
    """External id -> index, tolerant of JSON's types: "42" finds 42 in an integer map."""

    def __init__(self, ids: np.ndarray, integer: bool):
        self.integer = integer
        self.ids = ids
        self.index = {v: i for i, v in enumerate(ids.tolist())}

    def get(self, value: Id) -> int:
        if self.integer and isinstance(value, str) and CANONICAL_INT.match(value):
            value = int(value)
        elif not self.integer and not isinstance(value, str):
            value = str(value)
        return self.index.get(value, -1)

    def many(self, values: Sequence[Id]) -> tuple[np.ndarray, list]:
        """Indices of the known values (order kept, duplicates dropped) and the unknown values."""
        found = [(self.get(v), v) for v in values]
        unknown = [v for i, v in found if i < 0]
        idx = np.fromiter((i for i, _ in found if i >= 0), dtype=np.int64)
        _, first = np.unique(idx, return_index=True)
        return idx[np.sort(first)], unknown


class ItemAttributes:
    """Categorical item attributes for request filters, as item-index sets per value.

    A cell may hold several values separated by '|'. A filter {column: [values]} keeps items
    with any of the values in that column; several columns must all match.
    """

    def __init__(self, frame: pd.DataFrame, items: _Lookup, source: str = "item attributes"):
        if "item_id" not in frame.columns:
            raise RecsysError(f"{source}: no item_id column (columns: {', '.join(map(str, frame.columns))})")
        idx = np.array([items.get(v) for v in frame["item_id"].tolist()], dtype=np.int64)
        known = idx >= 0
        self.unknown_rows = int((~known).sum())
        self.index: dict[str, dict[str, np.ndarray]] = {}
        for column in frame.columns.drop("item_id"):
            cells = frame.loc[known, column].astype("string").fillna("").str.split("|")
            exploded = pd.DataFrame({"item": np.repeat(idx[known], cells.str.len()),
                                     "value": np.concatenate(cells.to_numpy()) if len(cells) else []})
            exploded = exploded[exploded["value"] != ""]
            self.index[str(column)] = {str(v): np.unique(g["item"].to_numpy())
                                       for v, g in exploded.groupby("value")}

    def select(self, filters: Mapping[str, Sequence[Id]]) -> np.ndarray:
        """Sorted item indices that pass every filter."""
        chosen: np.ndarray | None = None
        for column, values in filters.items():
            if column not in self.index:
                raise RequestError(f"filters: unknown item attribute {column!r}; "
                                   f"known: {', '.join(sorted(self.index)) or 'none'}")
            by_value = self.index[column]
            parts = [by_value[str(v)] for v in values if str(v) in by_value]
            match = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
            chosen = match if chosen is None else np.intersect1d(chosen, match, assume_unique=True)
        return chosen if chosen is not None else np.empty(0, dtype=np.int64)


class Engine:
    """Answers recommend / score / similar queries for one loaded model."""

    def __init__(self, model: BaseRecommender, seen: Interactions, *, version: str = "local",
                 source: str = "", attributes: pd.DataFrame | None = None):
        self.model = model
        self.version = version
        self.source = source
        self.users = _Lookup(model.user_map_.ids, model.user_map_.is_integer)
        self.items = _Lookup(model.item_map_.ids, model.item_map_.is_integer)
        self.n_items = len(self.items.ids)
        self.seen_indptr = seen.matrix.indptr
        self.seen_indices = seen.matrix.indices
        self.popularity = seen.item_popularity.astype(np.float32)
        self.attributes = ItemAttributes(attributes, self.items) if attributes is not None else None
        if isinstance(model, FactorModel):
            self.user_factors = model.user_factors().cpu().numpy()
            self.item_factors = np.ascontiguousarray(model.item_factors().cpu().numpy())
            norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
            self.item_unit = self.item_factors / np.maximum(norms, 1e-12)
        else:
            self.user_factors = self.item_factors = self.item_unit = None

    @property
    def model_name(self) -> str:
        return self.model.name

    # ---- candidates ------------------------------------------------------------------------
    def candidates(self, item_ids: Sequence[Id] | None, filters: Mapping[str, Sequence[Id]] | None
                   ) -> tuple[np.ndarray | None, list]:
        """Candidate item indices (None: the whole catalogue) and the unknown requested ids."""
        cand, unknown = (None, []) if item_ids is None else self.items.many(item_ids)
        if filters:
            if self.attributes is None:
                raise RequestError("filters: this server has no item attributes "
                                   "(start it with --item-attributes FILE)")
            passing = self.attributes.select(filters)
            cand = passing if cand is None else cand[np.isin(cand, passing)]
        return cand, unknown

    # ---- scoring ---------------------------------------------------------------------------
    def _score_rows(self, users: np.ndarray, cand: np.ndarray | None) -> np.ndarray:
        """Scores of `users` (rows; -1 = unknown, scored by popularity) over the candidates."""
        known = users >= 0
        if known.all():  # the common case: one product, no copy
            return self._model_scores(users, cand)
        popularity = self.popularity if cand is None else self.popularity[cand]
        scores = np.empty((len(users), len(popularity)), dtype=np.float32)
        scores[~known] = popularity
        if known.any():
            scores[known] = self._model_scores(users[known], cand)
        return scores

    def _model_scores(self, users: np.ndarray, cand: np.ndarray | None) -> np.ndarray:
        if self.user_factors is not None:
            factors = self.item_factors if cand is None else self.item_factors[cand]
            return self.user_factors[users] @ factors.T
        return self.model.score(users, cand).float().cpu().numpy()

    def _masked(self, scores: np.ndarray, user: int, cand: np.ndarray | None,
                exclude_seen: bool, exclude: np.ndarray | None) -> np.ndarray:
        blocked = []
        if exclude_seen and user >= 0:
            blocked.append(self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]])
        if exclude is not None and len(exclude):
            blocked.append(exclude)
        for items in blocked:
            if cand is None:
                scores[items] = -np.inf
            else:
                scores[np.isin(cand, items)] = -np.inf
        return scores

    def recommend(self, user_id: Id, k: int, *, exclude_seen: bool = True,
                  item_ids: Sequence[Id] | None = None, exclude_item_ids: Sequence[Id] = (),
                  filters: Mapping[str, Sequence[Id]] | None = None) -> Ranked:
        """Top-k items for a user; unknown users get the most popular items, flagged fallback."""
        return self.recommend_many([user_id], k, exclude_seen=exclude_seen, item_ids=item_ids,
                                   exclude_item_ids=exclude_item_ids, filters=filters)[0]

    def recommend_many(self, user_ids: Sequence[Id], k: int, *, exclude_seen: bool = True,
                       item_ids: Sequence[Id] | None = None, exclude_item_ids: Sequence[Id] = (),
                       filters: Mapping[str, Sequence[Id]] | None = None) -> list[Ranked]:
        """`recommend` for several users, candidates and filters resolved once."""
        cand, unknown = self.candidates(item_ids, filters)
        exclude = self.items.many(exclude_item_ids)[0] if exclude_item_ids else None
        n = len(user_ids)
        return self._rank(user_ids, [k] * n, [exclude_seen] * n, cand, unknown, exclude)

    def recommend_each(self, user_ids: Sequence[Id], ks: Sequence[int],
                       exclude_seen: Sequence[bool]) -> list[Ranked]:
        """Whole-catalogue top-k for independent requests, each with its own k and
        exclude_seen, scored together: how concurrent requests share one matrix product."""
        return self._rank(user_ids, ks, exclude_seen, None, [], None)

    def _rank(self, user_ids: Sequence[Id], ks: Sequence[int], exclude_seen: Sequence[bool],
              cand: np.ndarray | None, unknown: list, exclude: np.ndarray | None) -> list[Ranked]:
        """Users scored in blocks of one matrix product (at most BLOCK_SCORES scores each)."""
        users = np.fromiter((self.users.get(u) for u in user_ids), dtype=np.int64, count=len(user_ids))
        if cand is not None and len(cand) == 0:
            return [Ranked([], [], fallback=u < 0, unknown_item_ids=unknown) for u in users]
        block = max(1, BLOCK_SCORES // (self.n_items if cand is None else len(cand)))
        ranked = []
        for start in range(0, len(users), block):
            rows = users[start:start + block]
            for row, (user, scores) in enumerate(zip(rows, self._score_rows(rows, cand), strict=True)):
                masked = self._masked(scores, user, cand, exclude_seen[start + row], exclude)
                top, values = _top_k(masked, ks[start + row])
                items = top if cand is None else cand[top]
                ranked.append(Ranked(self.items.ids[items].tolist(), values.tolist(),
                                     fallback=user < 0, unknown_item_ids=unknown))
        return ranked

    def score(self, user_id: Id, item_ids: Sequence[Id]) -> Ranked:
        """Scores of the given items for a user, in request order (popularity for unknown users)."""
        user = self.users.get(user_id)
        cand, unknown = self.items.many(item_ids)
        scores = self._score_rows(np.array([user]), cand)[0]
        return Ranked(self.items.ids[cand].tolist(), scores.astype(float).tolist(),
                      fallback=user < 0, unknown_item_ids=unknown)

    def similar(self, item_id: Id, k: int) -> Ranked:
        """The k items with the most similar factors (cosine), the item itself left out."""
        if self.item_unit is None:
            raise RequestError(f"similar items need item factors; model {self.model_name!r} has "
                               "none", status=501)
        item = self.items.get(item_id)
        if item < 0:
            raise RequestError(f"unknown item_id {item_id!r}", status=404)
        scores = self.item_unit @ self.item_unit[item]
        scores[item] = -np.inf
        top, values = _top_k(scores, k)
        return Ranked(self.items.ids[top].tolist(), values.tolist())


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest finite scores, best first; ties go to the lower
    index, so equal scores (popularity counts) always rank the same way."""
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[:k - len(above)]
        part = np.concatenate([above, ties])
    else:
        part = np.arange(n)
    order = part[np.lexsort((part, -scores[part]))]
    values = scores[order]
    finite = np.isfinite(values)
    if not finite.all():
        order, values = order[finite], values[finite]
    return order, values
