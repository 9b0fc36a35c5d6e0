"""Batch recommendation: top-K for many users, streamed to Parquet in bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys.atomic import atomic_file
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.evaluate.evaluator import SCORE_BUDGET
from recsys.models.base import BaseRecommender


def _id_type(idmap: IdMap) -> pa.DataType:
    return pa.int64() if idmap.is_integer else pa.string()


def recommend_to_parquet(model: BaseRecommender, users: np.ndarray, k: int, out: str | Path, *,
                         exclude: Interactions | None = None, chunk_users: int | None = None,
                         progress: bool = True) -> int:
    """Write columns user_id, item_id, score, rank (1 = best) with external ids; returns rows.

    Users are scored in chunks sized so a chunk's scores stay under SCORE_BUDGET floats;
    excluded (e.g. training) items never appear, so a user may get fewer than k rows.
    """
    if k <= 0:
        raise RecsysError(f"k must be positive, got {k}")
    if chunk_users is not None and chunk_users <= 0:
        raise RecsysError(f"chunk_users must be positive, got {chunk_users}")
    n_items = len(model.item_map_)
    k = min(k, n_items)
    chunk = chunk_users or max(1, min(65536, SCORE_BUDGET // max(n_items, k)))
    schema = pa.schema([("user_id", _id_type(model.user_map_)), ("item_id", _id_type(model.item_map_)),
                        ("score", pa.float32()), ("rank", pa.int32())])
    rows = 0
    # written beside `out` and renamed at the end: a kill leaves the previous file or none
    with atomic_file(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in tqdm(range(0, len(users), chunk), desc="recommend", unit="chunk",
                          disable=not progress):
            batch = users[start:start + chunk]
            items, scores = model.recommend(batch, k, exclude=exclude)
            keep = np.isfinite(scores)
            user_idx = np.repeat(batch, keep.sum(1))
            ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)
            table = pa.table({
                "user_id": model.user_map_.to_ids(user_idx),
                "item_id": model.item_map_.to_ids(items[keep]),
                "score": scores[keep].astype(np.float32),
                "rank": ranks[keep],
            }, schema=schema)
            writer.write_table(table)
            rows += table.num_rows
    return rows
