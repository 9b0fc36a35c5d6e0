"""The one ranking path: evaluation, `recsys recommend`, the pyfunc model, Spark and the HTTP
endpoint all rank through a `Ranker`, so they return the same lists for the same model.

A user is answered in one of three ways: a user the model knows, from the model; a user it
does not know but who comes with a history of items (or features) and a model that encodes new
users (`EncodesNewUsers`), from the vector the model folds in (`folded_in`); anyone else from
item popularity in the seen items (`fallback`). Seen items are masked (a known user's stored
items, a new user's history), and ties go to the lower item index (`ranking.top_k`).

Factor models score through their `FactorTable`s: per block of users, the users' rows made
dense times the item table (one numpy product on the CPU, the serving fast path; scipy's CSR
product for a sparse table; torch on an accelerator); other models through `model.score`, on
the model's device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureTable
from recsys.data.idmap import CANONICAL_INT, IdMap
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.factor_table import FactorTable
from recsys.models.base import EncodesNewUsers, HasFactors
from recsys.ranking import block_rows, mask_pairs, top_k, top_k_unsure

Id = int | str
_ROW = "__row__"  # the id column of request-time feature rows: their position


@dataclass(frozen=True)
class Query:
    """One user to rank items for.

    `user_id` names a user the model knows; for anyone else (or None) the model answers from
    `history` (ids of items the user interacted with, repeats counting as in training) or
    `features` (user feature columns), when it encodes new users from them. History and
    features of a known user are not read.
    """

    user_id: Id | None = None
    history: Sequence[Id] | None = None
    features: Mapping[str, Any] | None = None
    k: int = 10
    exclude_seen: bool = True


@dataclass(frozen=True)
class Ranked:
    """A ranked answer for one query: external item ids best first, with their scores."""

    item_ids: list
    scores: list[float]
    fallback: bool = False
    folded_in: bool = False
    unknown_item_ids: list = field(default_factory=list)


@dataclass(frozen=True)
class Recommendations:
    """Array form of a ranked batch: item indices [n, k] and scores [n, k] (-inf where a row
    has fewer than k candidates left), and per row whether it was a popularity fallback or a
    folded-in new user."""

    items: np.ndarray
    scores: np.ndarray
    fallback: np.ndarray
    folded_in: np.ndarray


class IdLookup:
    """External id -> index, tolerant of JSON's types: "42" finds 42 in an integer map."""

    def __init__(self, idmap: IdMap):
        self.ids = idmap.ids
        self.integer = idmap.is_integer
        self.index = {v: i for i, v in enumerate(self.ids.tolist())}

    def get(self, value: Id) -> int:
        if self.integer and isinstance(value, str) and CANONICAL_INT.match(value):
            value = int(value)
        elif not self.integer and not isinstance(value, str):
            value = str(value)
        return self.index.get(value, -1)

    def each(self, values: Sequence[Id]) -> tuple[np.ndarray, list]:
        """Indices of the known values, in order and with repeats, and the unknown values."""
        found = [(self.get(v), v) for v in values]
        idx = np.fromiter((i for i, _ in found if i >= 0), dtype=np.int64)
        return idx, [v for i, v in found if i < 0]

    def many(self, values: Sequence[Id]) -> tuple[np.ndarray, list]:
        """Indices of the known values (order kept, repeats dropped) and the unknown values."""
        idx, unknown = self.each(values)
        _, first = np.unique(idx, return_index=True)
        return idx[np.sort(first)], unknown


class Ranker:
    """Top-k items for users of one model, with the users' seen items masked.

    `seen` (usually the training data, on the model's id maps) supplies the items to exclude
    and the popularity that answers users the model cannot score; without it nothing is
    excluded and unknown users are an error.
    """

    def __init__(self, model: Any, seen: Interactions | None = None, *, n_items: int | None = None):
        self.model = model
        self._n_items = n_items
        self.seen = None if seen is None else seen.matrix.tocsr()
        self.popularity = None if seen is None else seen.item_popularity.astype(np.float32)
        self.factors = factor_tables(model)
        if self.factors is not None and hasattr(model, "user_map_"):
            shape = (len(self.factors[0]), len(self.factors[1]))
            maps = (len(model.user_map_), len(model.item_map_))
            if shape != maps:
                raise RecsysError(f"{model.name} model has factors for {shape[0]} users x {shape[1]} "
                                  f"items but id maps of {maps[0]} users x {maps[1]} items")
        self.encoder = model if isinstance(model, EncodesNewUsers) and self.factors else None
        self._seen_on: dict[torch.device, torch.Tensor] = {}

    @cached_property
    def device(self) -> torch.device:
        """Where the scores are computed: the item factors' device, else the model's
        `device_`, else the CPU."""
        if self.factors is not None:
            return self.factors[1].device
        return torch.device(getattr(self.model, "device_", None) or "cpu")

    # ---- ids ---------------------------------------------------------------------------------
    @cached_property
    def users(self) -> IdLookup:
        return IdLookup(self.model.user_map_)

    @cached_property
    def items(self) -> IdLookup:
        return IdLookup(self.model.item_map_)

    @cached_property
    def n_items(self) -> int:
        if self._n_items is not None:
            return self._n_items
        if hasattr(self.model, "item_map_"):
            return len(self.model.item_map_)
        if self.seen is not None:
            return self.seen.shape[1]
        raise RecsysError("the number of items is unknown: give the model id maps or seen items")

    # ---- arrays ------------------------------------------------------------------------------
    def top_items(self, users: np.ndarray, k: int, *, items: np.ndarray | None = None,
                  exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and scores [len(users), min(k, candidates)] for known user indices,
        best first; `items` restricts the candidates (item indices)."""
        users = np.asarray(users, dtype=np.int64)
        if len(users) and (users.min() < 0 or (hasattr(self.model, "user_map_")
                                               and users.max() >= len(self.model.user_map_))):
            raise RecsysError("top_items takes indices of users the model knows")
        ranked = self.recommend(users, k, items=items, exclude_seen=exclude_seen)
        return ranked.items, ranked.scores

    def blocks(self, users: np.ndarray, k: int, *, exclude_seen: bool = True,
               items: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(users, item indices, scores) per block of known users whose scores fit the budget."""
        n = self.n_items if items is None else len(items)
        step = block_rows(n, self.device, rows=len(users))
        for start in range(0, len(users), step):
            block = users[start:start + step]
            yield (block, *self.top_items(block, k, items=items, exclude_seen=exclude_seen))

    def recommend(self, users: np.ndarray, k: int, *, history: sp.csr_matrix | None = None,
                  features: pd.DataFrame | None = None, exclude_seen: bool | np.ndarray = True,
                  items: np.ndarray | None = None, exclude: np.ndarray | None = None,
                  ) -> Recommendations:
        """Rank for `users` (model indices; -1 for a user the model does not know).

        history: CSR [n, n_items] of the unknown users' items (rows of known users unread);
        features: frame of their user features, one row per user; exclude_seen: one flag, or
        one per user; items: candidate item indices (default: all); exclude: item indices
        never returned. Scored in blocks sized to the free memory (`ranking.block_rows`).
        """
        if k <= 0:
            raise RecsysError(f"k must be positive, got {k}")
        users = np.asarray(users, dtype=np.int64)
        n = len(users)
        excluded = np.broadcast_to(np.asarray(exclude_seen, dtype=bool), (n,))
        folded = self._foldable(users, history, features)
        vectors = None
        if folded.any():
            rows = np.flatnonzero(folded)
            vectors = self._vectors(None if features is None else features.iloc[rows],
                                    None if history is None else history[rows])
        fallback = (users < 0) & ~folded
        if fallback.any() and self.popularity is None:
            raise RecsysError("users unknown to the model need seen items for the popularity fallback")
        n_cand = self.n_items if items is None else len(items)
        k = min(k, n_cand)
        out_items = np.zeros((n, k), dtype=np.int64)
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        step = block_rows(n_cand, self.device, rows=n)
        vector_row = np.cumsum(folded) - 1  # row of each folded user in `vectors`
        for start in range(0, n if k else 0, step):
            part = slice(start, start + step)
            scores = self._scores(users[part], folded[part], vectors, vector_row[part], items)
            rows, cols = self._blocked(users[part], folded[part] & excluded[part],
                                       None if history is None else history[part], excluded[part])
            if items is not None:  # item index -> candidate position; others are not scored
                position = np.full(self.n_items, -1, dtype=np.int64)
                position[items] = np.arange(len(items))
                cols = position[cols]
                rows, cols = rows[cols >= 0], cols[cols >= 0]
            mask_pairs(scores, rows, cols)
            if exclude is not None and len(exclude):
                cols = exclude if items is None else np.flatnonzero(np.isin(items, exclude))
                scores[:, torch.as_tensor(cols, device=scores.device)] = float("-inf")
            top, values = top_k(scores, k)
            top = top.cpu().numpy()
            out_items[part] = top if items is None else np.asarray(items)[top]
            out_scores[part] = values.cpu().numpy()
        return Recommendations(out_items, out_scores, fallback, folded)

    def top_known(self, users: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items, scores, unsure) [len(users), min(k, n_items)] for known user indices, their
        seen items masked, left on the scoring device with no host sync (`top_k_unsure`): the
        path of whole-population jobs. Rank the `unsure` rows again with `top_items`."""
        scores = self._model_scores(users, None)
        if self.seen is not None:
            self._mask_seen(scores, users)
        return top_k_unsure(scores, k)

    def _mask_seen(self, scores: torch.Tensor, users: np.ndarray) -> None:
        """Set the seen items of `users` (one per score row) to -inf on the scores' device: the
        row offsets come from the host's CSR pointers (O(rows)), the items from a copy of the
        CSR indices kept on an accelerator."""
        device = scores.device
        if device.type == "cpu":  # the host is the device: index arrays straight from the CSR
            mask_pairs(scores, *_ragged_rows(self.seen, users))
            return
        indptr = self.seen.indptr
        starts = indptr[users].astype(np.int64)
        lengths = indptr[users + 1].astype(np.int64) - starts
        total = int(lengths.sum())
        if total == 0:
            return
        if device not in self._seen_on:
            self._seen_on[device] = torch.from_numpy(self.seen.indices.astype(np.int64)).to(device)
        lengths_t = torch.from_numpy(lengths).to(device)
        shift = torch.from_numpy(starts - (np.cumsum(lengths) - lengths)).to(device)
        rows = torch.repeat_interleave(torch.arange(len(users), device=device), lengths_t,
                                       output_size=total)
        at = torch.arange(total, device=device) + torch.repeat_interleave(shift, lengths_t,
                                                                          output_size=total)
        scores[rows, self._seen_on[device][at]] = float("-inf")

    def _foldable(self, users: np.ndarray, history: sp.csr_matrix | None,
                  features: pd.DataFrame | None) -> np.ndarray:
        """Which rows are unknown users the model can encode from what they came with."""
        can = np.zeros(len(users), dtype=bool)
        if self.encoder is None:
            return can
        inputs = getattr(self.encoder, "new_user_inputs", ())
        if history is not None and "history" in inputs:
            can |= np.diff(history.indptr) > 0
        if features is not None and "features" in inputs:
            can |= features.notna().any(axis=1).to_numpy()
        return can & (users < 0)

    @cached_property
    def user_features(self) -> FeatureTable:
        """The user features (columns, vocabularies) the model encodes new users from; a
        RecsysError saying why for a model that does not."""
        name = getattr(self.model, "name", type(self.model).__name__)
        if self.encoder is None or "features" not in self.encoder.new_user_inputs:
            reads = " and ".join(getattr(self.encoder, "new_user_inputs", ())) or "nothing"
            raise RecsysError(f"{name} model does not answer new users from features (it reads "
                              f"{reads} for them)")
        table = getattr(self.model, "features_", {}).get("user_features")
        if table is None:
            raise RecsysError(f"{name} model was trained without user features")
        return table

    def _vectors(self, features: pd.DataFrame | None, history: sp.csr_matrix | None) -> torch.Tensor:
        """The encoder's vectors of new users from what it reads of their inputs."""
        inputs = self.encoder.new_user_inputs
        return self.encoder.user_vectors(
            features=self._encode_features(features) if features is not None
            and "features" in inputs else None,
            history=history if "history" in inputs else None)

    def _encode_features(self, frame: pd.DataFrame) -> FeatureTable:
        """Raw user feature columns (one row per new user) encoded with the vocabularies and
        statistics the model learned, rows in order."""
        rows = frame.reset_index(drop=True).assign(**{_ROW: np.arange(len(frame))})
        return self.user_features.encode(rows, _ROW, ids=IdMap(np.arange(len(frame))),
                                         source="user features")

    def _scores(self, users: np.ndarray, folded: np.ndarray, vectors: torch.Tensor | None,
                vector_row: np.ndarray, items: np.ndarray | None) -> torch.Tensor:
        """Scores [len(users), candidates]: model, folded-in vector, or popularity per row."""
        known = users >= 0
        if known.all():  # the common case: one product, no copy
            return self._model_scores(users, items)
        parts = []
        if known.any():
            parts.append((known, self._model_scores(users[known], items)))
        if folded.any():
            parts.append((folded, self._product(vectors[torch.from_numpy(vector_row[folded])], items)))
        device = parts[0][1].device if parts else torch.device("cpu")
        n = self.n_items if items is None else len(items)
        if self.popularity is None:  # every row is known or folded in
            scores = torch.empty((len(users), n), device=device)
        else:
            popularity = self.popularity if items is None else self.popularity[items]
            scores = torch.from_numpy(popularity).to(device).expand(len(users), -1).clone()
        for rows, part in parts:
            scores[torch.from_numpy(rows).to(device)] = part.to(device)
        return scores

    def _model_scores(self, users: np.ndarray, items: np.ndarray | None) -> torch.Tensor:
        if self.factors is None:
            return self.model.score(users, items).float()
        return self._product(self.factors[0].dense_rows(users), items)

    def _product(self, user: torch.Tensor, items: np.ndarray | None) -> torch.Tensor:
        """Scores [len(user), candidates] of dense user vectors against the item table."""
        table = self.factors[1] if items is None else self.factors[1].rows(items)
        return table.scores(user)

    def _blocked(self, users: np.ndarray, history_rows: np.ndarray, history: sp.csr_matrix | None,
                 excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs to mask: a known user's seen items, a folded-in user's history."""
        rows, cols = [], []
        if self.seen is not None:
            take = np.flatnonzero((users >= 0) & excluded)
            r, c = _ragged_rows(self.seen, users[take])
            rows.append(take[r])
            cols.append(c)
        if history is not None and history_rows.any():
            take = np.flatnonzero(history_rows)
            r, c = _ragged_rows(history, take)
            rows.append(take[r])
            cols.append(c)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(cols)

    # ---- queries -----------------------------------------------------------------------------
    def rank(self, queries: Sequence[Query], *, candidates: Sequence[Id] | None = None,
             exclude: Sequence[Id] = ()) -> list[Ranked]:
        """Answer queries by external ids; `candidates` restricts the items, `exclude` removes
        items for every query. Unknown candidate and history ids are reported per answer."""
        cand, unknown = (None, []) if candidates is None else self.items.many(candidates)
        excl = self.items.many(exclude)[0] if exclude else None
        return self.rank_among(queries, cand, excl, unknown)

    def rank_among(self, queries: Sequence[Query], cand: np.ndarray | None,
                   exclude: np.ndarray | None = None, unknown: Sequence[Id] = ()) -> list[Ranked]:
        """`rank` over candidate item indices (None: the whole catalogue)."""
        if not queries:
            return []
        users, history, features, unknown_history = self.resolve(queries)
        ks = [q.k for q in queries]
        if cand is not None and len(cand) == 0:
            folded = self._foldable(users, history, features)
            return [Ranked([], [], fallback=bool(u < 0 and not f), folded_in=bool(f),
                           unknown_item_ids=[*unknown, *h])
                    for u, f, h in zip(users, folded, unknown_history, strict=True)]
        ranked = self.recommend(users, max(ks), history=history, features=features,
                                exclude_seen=np.array([q.exclude_seen for q in queries]),
                                items=cand, exclude=exclude)
        answers = []
        for row, k in enumerate(ks):
            scores = ranked.scores[row, :k]
            keep = np.isfinite(scores)
            answers.append(Ranked(self.items.ids[ranked.items[row, :k][keep]].tolist(),
                                  scores[keep].tolist(), fallback=bool(ranked.fallback[row]),
                                  folded_in=bool(ranked.folded_in[row]),
                                  unknown_item_ids=[*unknown, *unknown_history[row]]))
        return answers

    def resolve(self, queries: Sequence[Query]):
        """Model user indices (-1: unknown), the unknown users' history as CSR (or None), their
        features as a frame (or None) and the unknown history ids of each query."""
        users = np.fromiter((-1 if q.user_id is None else self.users.get(q.user_id) for q in queries),
                            dtype=np.int64, count=len(queries))
        unknown_history: list[list] = [[] for _ in queries]
        history = features = None
        new = [i for i, q in enumerate(queries) if users[i] < 0]
        if any(queries[i].history for i in new):
            rows, cols = [], []
            for i in new:
                idx, unknown_history[i] = self.items.each(queries[i].history or ())
                rows.append(np.full(len(idx), i))
                cols.append(idx)
            rows, cols = np.concatenate(rows), np.concatenate(cols)
            history = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                    shape=(len(queries), self.n_items))
            history.sum_duplicates()
        for i, q in enumerate(queries):  # a known user's history is not read, but bad ids are said
            if users[i] >= 0 and q.history:
                unknown_history[i] = self.items.each(q.history)[1]
        if any(queries[i].features for i in new):
            features = pd.DataFrame([dict(q.features or {}) if users[i] < 0 else {}
                                     for i, q in enumerate(queries)])
        return users, history, features, unknown_history

    def score(self, query: Query, item_ids: Sequence[Id]) -> Ranked:
        """Scores of `item_ids` for one user, one per known id in request order (repeats
        included); unknown ids are reported."""
        idx, unknown = self.items.each(item_ids)
        users, history, features, unknown_history = self.resolve([query])
        folded = self._foldable(users, history, features)
        vectors = None
        if folded.any():
            vectors = self._vectors(features, history)
        fallback = bool(users[0] < 0 and not folded[0])
        if fallback and self.popularity is None:
            raise RecsysError("users unknown to the model need seen items for the popularity fallback")
        scores = self._scores(users, folded, vectors, np.zeros(1, np.int64), idx)[0]
        return Ranked(self.items.ids[idx].tolist(), scores.cpu().double().tolist(),
                      fallback=fallback, folded_in=bool(folded[0]),
                      unknown_item_ids=[*unknown, *unknown_history[0]])


def at_grade(model: Any, grade: int | str | None) -> Any:
    """`model` ranking by level `grade` of graded feedback (a level name or 1-based number,
    through the model's `at_level`, e.g. gnolr); None: the model as it is. RecsysError for a
    model without levels or a level it does not have."""
    if grade is None:
        return model
    if not hasattr(model, "at_level"):
        name = getattr(model, "name", type(model).__name__)
        raise RecsysError(f"{name} model has no grades to rank by (a model trained on graded "
                          "feedback, such as gnolr, has)")
    return model.at_level(grade)


def history_matrix(histories: Sequence[Sequence[Id] | None], item_map: IdMap
                   ) -> tuple[sp.csr_matrix, int]:
    """CSR [len(histories), n_items] of item-id lists (None: no history; repeats count), and
    the number of ids not in `item_map` (left out)."""
    flat = pd.Series(list(histories), dtype=object).explode().dropna()
    return pairs_matrix(flat.index.to_numpy(), flat, len(histories), item_map)


def pairs_matrix(rows: np.ndarray, item_ids: Sequence[Id], n_rows: int, item_map: IdMap
                 ) -> tuple[sp.csr_matrix, int]:
    """CSR [n_rows, n_items] counting (row, item id) pairs, and the number of pairs whose item
    is not in `item_map` (left out)."""
    cols = item_map.index_of(item_ids) if len(rows) else np.zeros(0, np.int64)
    known = cols >= 0
    matrix = sp.csr_matrix((np.ones(int(known.sum()), np.float32),
                            (np.asarray(rows, dtype=np.int64)[known], cols[known])),
                           shape=(n_rows, len(item_map)))
    matrix.sum_duplicates()
    return matrix, int((~known).sum())


def factor_tables(model: Any) -> tuple[FactorTable, FactorTable] | None:
    """(user, item) factor tables of a fitted factor model, as it holds them (dense or CSR,
    `FactorModel.factor_tables`; for another `HasFactors`, its factors as dense tables); None
    for other models."""
    if not isinstance(model, HasFactors) or not getattr(model, "is_fitted", True):
        return None
    if hasattr(model, "factor_tables"):
        return model.factor_tables()
    return FactorTable(model.user_factors()), FactorTable(model.item_factors())


def _ragged_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `rows`, column) of the stored entries of those CSR rows, without building a
    sub-matrix (the per-request path)."""
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1] - starts
    where = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return where, matrix.indices[np.repeat(starts, lengths) + offsets].astype(np.int64)
