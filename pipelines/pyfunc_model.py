"""The MLflow pyfunc wrapper of a recsys model, logged as code (MLflow "models from code"),
so that neither the wrapper nor the weights are pickled.

Input: a frame with a `user_id` column. Params: `k` (items per user), `filter_seen` (exclude
the user's training items) and `output`: "rows" gives rows user_id, item_id, score, rank,
fallback; "lists" gives one row per input user with `item_ids` and `scores` lists, the shape
`mlflow.pyfunc.spark_udf` needs. `fallback` flags users the model does not know, who get the
most popular items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from recsys.models.base import load_model, load_seen

OUTPUTS = ("rows", "lists")


class RecsysModel(PythonModel):
    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["model"])
        self.seen = load_seen(context.artifacts["model"], self.model)
        self.popular = np.argsort(-self.seen.item_popularity, kind="stable")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", 10))
        filter_seen = bool(params.get("filter_seen", True))
        output = str(params.get("output", "rows"))
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        k = min(k, len(self.model.item_map_))
        ids = model_input["user_id"].to_numpy()
        idx = self.model.user_map_.index_of(ids)
        known = idx >= 0
        items = np.empty((len(ids), k), dtype=np.int64)
        scores = np.empty((len(ids), k), dtype=np.float32)
        if known.any():
            exclude = self.seen if filter_seen else None
            items[known], scores[known] = self.model.recommend(idx[known], k, exclude=exclude)
        top = self.popular[:k]
        items[~known], scores[~known] = top, self.seen.item_popularity[top]
        table = _lists if output == "lists" else _rows
        return table(ids, self.model.item_map_.to_ids(items), scores, fallback=~known)


def _rows(user_ids, items, scores, fallback) -> pd.DataFrame:
    keep = np.isfinite(scores)
    ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
    return pd.DataFrame({
        "user_id": np.repeat(user_ids, keep.sum(1)),
        "item_id": items[keep],
        "score": scores[keep],
        "rank": ranks[keep].astype(np.int64),
        "fallback": np.repeat(fallback, keep.sum(1)),
    })


def _lists(user_ids, items, scores, fallback) -> pd.DataFrame:
    keep = np.isfinite(scores)
    return pd.DataFrame({
        "user_id": user_ids,
        "item_ids": [row[ok].tolist() for row, ok in zip(items, keep, strict=True)],
        "scores": [row[ok].tolist() for row, ok in zip(scores, keep, strict=True)],
        "fallback": fallback,
    })


set_model(RecsysModel())
