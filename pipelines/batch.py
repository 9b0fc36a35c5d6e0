"""Batch recommendation: top-K for many users, streamed to Parquet in bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.atomic import atomic_file
from recsys.data.idmap import CANONICAL_INT, IdMap, normalize_ids
from recsys.data.io import check_ids, read_table
from recsys.errors import RecsysError
from recsys.inference import Ranker, pairs_matrix
from recsys.ranking import block_rows

COLUMNS = ("user_id", "item_id", "score", "rank", "fallback", "folded_in")


def id_type(idmap: IdMap) -> pa.DataType:
    return pa.int64() if idmap.is_integer else pa.string()


def user_ids_like(values, integer: bool, source: str) -> np.ndarray:
    """Requested user ids in the type of the model's ids (`integer` or text), so "7" finds 7 and
    7 finds "7", and the output column has one type; text that is no integer cannot name a user
    of a model with integer ids."""
    check_ids(pd.Series(values), "user_id", source)  # an empty cell is no user
    ids = normalize_ids(values)
    if not integer:
        return ids.astype(str).astype(object)
    if ids.dtype == object:
        row = next(i for i, v in enumerate(ids) if not CANONICAL_INT.match(str(v)))
        raise RecsysError(f"{source}: user id {ids[row]!r} (row {row + 1}) is not an integer, but the "
                          "model's user ids are")
    return ids


def recommend_to_parquet(ranker: Ranker, user_ids: np.ndarray, k: int, out: str | Path, *,
                         history: sp.csr_matrix | None = None, features: pd.DataFrame | None = None,
                         chunk_users: int | None = None, progress: bool = True) -> dict[str, int]:
    """Write columns user_id, item_id, score, rank (1 = best), fallback, folded_in for the users
    `user_ids` (external ids, in the model's id type); returns the numbers of rows, fallback
    users and folded-in users.

    `history` (CSR, one row per user) and `features` (raw user feature columns, one row per
    user, NaN where absent) answer users the model does not know, when it can fold them in;
    other unknown users get the most popular items (fallback). Seen items never appear, so a
    user may get fewer than k rows. Users are scored in chunks sized to the free memory of the
    scoring device (`ranking.block_rows`), at most 65,536 users each.
    """
    model = ranker.model
    if k <= 0:
        raise RecsysError(f"k must be positive, got {k}")
    if chunk_users is not None and chunk_users <= 0:
        raise RecsysError(f"chunk_users must be positive, got {chunk_users}")
    n_items = len(model.item_map_)
    chunk = chunk_users or min(65536, block_rows(n_items, ranker.device))
    users = model.user_map_.index_of(user_ids)
    schema = pa.schema([("user_id", id_type(model.user_map_)), ("item_id", id_type(model.item_map_)),
                        ("score", pa.float32()), ("rank", pa.int32()), ("fallback", pa.bool_()),
                        ("folded_in", pa.bool_())])
    counts = dict.fromkeys(("rows", "fallback", "folded_in"), 0)
    # written beside `out` and renamed at the end: a kill leaves the previous file or none
    with atomic_file(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in tqdm(range(0, len(users), chunk), desc="recommend", unit="chunk",
                          disable=not progress):
            part = slice(start, start + chunk)
            ranked = ranker.recommend(users[part], k, history=None if history is None else history[part],
                                      features=None if features is None else features.iloc[part])
            keep = np.isfinite(ranked.scores)
            per_user = keep.sum(1)
            ranks = np.broadcast_to(np.arange(1, keep.shape[1] + 1, dtype=np.int32), keep.shape)
            table = pa.table({
                "user_id": np.repeat(user_ids[part], per_user),
                "item_id": model.item_map_.to_ids(ranked.items[keep]),
                "score": ranked.scores[keep],
                "rank": ranks[keep],
                "fallback": np.repeat(ranked.fallback, per_user),
                "folded_in": np.repeat(ranked.folded_in, per_user),
            }, schema=schema)
            writer.write_table(table)
            counts["rows"] += table.num_rows
            counts["fallback"] += int(ranked.fallback.sum())
            counts["folded_in"] += int(ranked.folded_in.sum())
    return counts


def read_history(path: str | Path, user_map: IdMap, item_map: IdMap
                 ) -> tuple[np.ndarray, sp.csr_matrix, int]:
    """A history file (rows user_id,item_id) as its distinct user ids (in the model's id type,
    first-seen order), a CSR [users, n_items] of their items, and the number of rows whose item
    the model does not know (left out)."""
    frame = read_table(path, ["user_id", "item_id"])
    check_ids(frame["item_id"], "item_id", str(path))
    ids = user_ids_like(frame["user_id"], user_map.is_integer, str(path))
    codes, distinct = pd.factorize(ids)
    matrix, unknown = pairs_matrix(codes, frame["item_id"], len(distinct), item_map)
    return np.asarray(distinct, dtype=ids.dtype), matrix, unknown


def align_rows(matrix: sp.csr_matrix, ids: np.ndarray, wanted: np.ndarray) -> sp.csr_matrix:
    """Rows of `matrix` (one per id in `ids`) for the ids `wanted`, empty where absent."""
    pos = pd.Index(ids).get_indexer(wanted)
    padded = sp.vstack([matrix, sp.csr_matrix((1, matrix.shape[1]), dtype=matrix.dtype)]).tocsr()
    return padded[np.where(pos >= 0, pos, matrix.shape[0])]


def history_lists(matrix: sp.csr_matrix, item_map: IdMap) -> list[list | None]:
    """Each row of a history matrix as a list of item ids (an item as often as its count), or
    None for an empty row: the `history` input of the exported model."""
    counts = matrix.data.astype(np.int64)
    items = item_map.to_ids(np.repeat(matrix.indices, counts))
    rows = np.repeat(np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), counts)
    lists = pd.Series(items, dtype=object).groupby(rows).agg(list)
    return [lists.get(r) for r in range(matrix.shape[0])]
