"""The in-memory scoring engine behind the endpoint: one loaded model, ready to answer.

An Engine never changes after it is built; a reload builds a new one and swaps the reference,
so a request sees either the old model or the new one, never a mix. Ranking is the library's
`Ranker` (numpy fast path for factor models, ties to the lower item index); the engine adds
what only serving needs: item attribute filters and similar items. Ids are looked up in dicts
built once at load time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from recsys.data.features import first_repeat
from recsys.data.interactions import Interactions
from recsys.data.request_features import feature_row, unknown_values
from recsys.errors import RecsysError
from recsys.inference import Id, IdLookup, Query, Ranked, Ranker, at_grade
from recsys.models.base import BaseRecommender
from recsys.ranking import top_k
from serving.validation import short

__all__ = ["Engine", "ItemAttributes", "Query", "Ranked", "RequestError"]


class RequestError(RecsysError):
    """A request the engine cannot answer as asked (answered with HTTP 4xx)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class ItemAttributes:
    """Categorical item attributes for request filters, as item-index sets per value.

    A cell may hold several values separated by '|'. A filter {column: [values]} keeps items
    with any of the values in that column; several columns must all match.
    """

    def __init__(self, frame: pd.DataFrame, items: IdLookup, source: str = "item attributes"):
        if "item_id" not in frame.columns:
            raise RecsysError(f"{source}: no item_id column (columns: {', '.join(map(str, frame.columns))})")
        idx = np.array([items.get(v) for v in frame["item_id"].tolist()], dtype=np.int64)
        known = idx >= 0
        if not known.any():  # another catalogue's file (or ids written another way)
            raise RecsysError(f"{source}: none of its {len(idx)} item ids is an item of the model "
                              f"(its first: {short(frame['item_id'].iloc[0])})")
        # unknown rows get distinct negative keys: only known items can repeat
        repeat = first_repeat(np.where(known, idx, -1 - np.arange(len(idx))))
        if repeat is not None:  # two rows for one item: neither may win silently
            first, row = repeat
            raise RecsysError(f"{source}: item {short(frame['item_id'].iloc[row])} appears twice "
                              f"(rows {first + 1} and {row + 1}); one row per item")
        self.unknown_rows = int((~known).sum())
        self.index: dict[str, dict[str, np.ndarray]] = {}
        for column in frame.columns.drop("item_id"):
            if (frame[column].astype("string").fillna("").str.strip() == "").all():
                raise RecsysError(f"{source}: column {short(column)} is empty in every row; fill "
                                  "it or remove it")
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
                raise RequestError(f"filters: unknown item attribute {short(column)}; "
                                   f"known: {', '.join(sorted(self.index)) or 'none'}")
            by_value = self.index[column]
            parts = [by_value[str(v)] for v in values if str(v) in by_value]
            match = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
            chosen = match if chosen is None else np.intersect1d(chosen, match, assume_unique=True)
        return chosen if chosen is not None else np.empty(0, dtype=np.int64)


class Engine:
    """Answers recommend / score / similar queries for one loaded model."""

    def __init__(self, model: BaseRecommender, seen: Interactions, *, version: str = "local",
                 source: str = "", attributes: pd.DataFrame | None = None,
                 attributes_source: str = "item attributes"):
        self.model = model
        self.seen = seen
        self.version = version
        self.source = source
        self.ranker = Ranker(model, seen)
        self._grades: dict[str, Engine] = {}
        self.users, self.items = self.ranker.users, self.ranker.items  # built now, not per request
        self.n_items = len(self.items.ids)
        self.attributes = (ItemAttributes(attributes, self.items, attributes_source)
                           if attributes is not None else None)
        # /similar's cosine: the item table as the ranker holds it (dense or CSR) and the norms
        # of its first `similar_columns` columns: trailing item-bias columns (those matched by
        # fixed user columns of ones) are left out, since a bias says how often an item is
        # picked, not what it is like, and BPR leaves it free up to a shift common to all items
        self.item_table = None if self.ranker.factors is None else self.ranker.factors[1]
        if self.item_table is not None:
            self.similar_columns = (self.item_table.shape[1]
                                    - int(getattr(model, "fixed_user_columns", 0)))
            self.item_norms = self.item_table.norms(self.similar_columns).clamp_min(1e-12)

    @property
    def model_name(self) -> str:
        return self.model.label

    @property
    def factor_bytes(self) -> int | None:
        """Bytes of the factor tables the ranker holds (CSR tables: values, indices and
        pointers); None for a model without factors."""
        return None if self.ranker.factors is None else sum(t.nbytes for t in self.ranker.factors)

    def at_grade(self, grade: Id | None) -> Engine:
        """This engine ranking by level `grade` of a graded model (a name or 1-based number;
        None: itself): a view sharing everything but the ranker, built once per level, so
        requests for one level still share one product. 422 for a model without levels or an
        unknown level."""
        if grade is None:
            return self
        key = str(grade)
        view = self._grades.get(key)
        if view is None:
            try:
                model = at_grade(self.model, grade)
            except RecsysError as exc:
                raise RequestError(f"grade: {exc}") from None
            view = copy.copy(self)
            view.ranker = Ranker(model, self.seen)
            view._grades = {}
            self._grades[key] = view  # a race builds it twice, harmlessly
        return view

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

    def features(self, values: Mapping[str, object] | None, where: str = "features"
                 ) -> tuple[dict | None, dict[str, list[str]]]:
        """Request-time user features checked against the model's (422 naming the feature
        otherwise): the row the ranker reads, and the values outside the vocabularies."""
        if not values:
            return None, {}
        try:
            row = feature_row(self.ranker.user_features, values, where)
        except RecsysError as exc:
            raise RequestError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
        return row, unknown_values(self.ranker.user_features, row)

    def recommend(self, user_id: Id, k: int, *, exclude_seen: bool = True,
                  history: Sequence[Id] | None = None, features: Mapping | None = None,
                  item_ids: Sequence[Id] | None = None, exclude_item_ids: Sequence[Id] = (),
                  filters: Mapping[str, Sequence[Id]] | None = None) -> Ranked:
        """Top-k items for a user: a known one from the model, an unknown one from `history`
        and/or `features` (folded in; features as checked by `features`) or else from
        popularity (flagged fallback)."""
        return self.recommend_many([user_id], k, exclude_seen=exclude_seen,
                                   history={str(user_id): history} if history else None,
                                   features={str(user_id): features} if features else None,
                                   item_ids=item_ids, exclude_item_ids=exclude_item_ids,
                                   filters=filters)[0]

    def recommend_many(self, user_ids: Sequence[Id], k: int, *, exclude_seen: bool = True,
                       history: Mapping[str, Sequence[Id]] | None = None,
                       features: Mapping[str, Mapping] | None = None,
                       item_ids: Sequence[Id] | None = None, exclude_item_ids: Sequence[Id] = (),
                       filters: Mapping[str, Sequence[Id]] | None = None) -> list[Ranked]:
        """`recommend` for several users (`history` and `features` keyed by the user id as
        text), candidates and filters resolved once."""
        cand, unknown = self.candidates(item_ids, filters)
        exclude = self.items.many(exclude_item_ids)[0] if exclude_item_ids else None
        history, features = history or {}, features or {}
        queries = [Query(u, history=history.get(str(u)), features=features.get(str(u)), k=k,
                         exclude_seen=exclude_seen) for u in user_ids]
        return self.ranker.rank_among(queries, cand, exclude, unknown)

    def recommend_each(self, queries: Sequence[Query]) -> list[Ranked]:
        """Whole-catalogue top-k for independent requests, each with its own k, exclude_seen and
        history, scored together: how concurrent requests share one matrix product."""
        return self.ranker.rank_among(queries, None)

    def score(self, user_id: Id, item_ids: Sequence[Id], *, history: Sequence[Id] | None = None,
              features: Mapping | None = None) -> Ranked:
        """Scores of the given items for a user, one per requested known id in request order
        (repeats included); popularity for unknown users without a history or features."""
        return self.ranker.score(Query(user_id, history=history, features=features), item_ids)

    def similar(self, item_id: Id, k: int) -> Ranked:
        """The k items with the most similar factors (cosine, item biases left out), the item
        itself left out."""
        if self.item_table is None:
            raise RequestError(f"similar items need item factors; model {self.model_name!r} has "
                               "none", status=501)
        item = self.items.get(item_id)
        if item < 0:
            raise RequestError(f"unknown item_id {short(item_id)}", status=404)
        norms = self.item_norms
        query = self.item_table.dense_rows(np.array([item]))  # a copy
        query[:, self.similar_columns:] = 0  # the bias columns count in neither vector
        scores = self.item_table.scores(query)
        scores = scores / (norms * norms[item])
        scores[0, item] = float("-inf")
        top, values = top_k(scores, k)
        keep = torch.isfinite(values[0])
        return Ranked(self.items.ids[top[0][keep].cpu().numpy()].tolist(),
                      values[0][keep].tolist())
