"""The MLflow pyfunc wrapper of a recsys model, logged as code (MLflow "models from code"),
so that neither the wrapper nor the weights are pickled.

Input: a frame with a `user_id` column. Params: `k` (items per user) and `filter_seen`
(exclude the user's training items). Output: rows user_id, item_id, score, rank, and a
`fallback` flag for users the model does not know, who get the most popular items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from recsys.models.base import load_model, load_seen


class RecsysModel(PythonModel):
    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["model"])
        self.seen = load_seen(context.artifacts["model"], self.model)
        self.popular = np.argsort(-self.seen.item_popularity, kind="stable")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", 10))
        filter_seen = bool(params.get("filter_seen", True))
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        ids = model_input["user_id"].to_numpy()
        idx = self.model.user_map_.index_of(ids)
        known = idx >= 0
        frames = []
        if known.any():
            users = idx[known]
            items, scores = self.model.recommend(users, k, exclude=self.seen if filter_seen else None)
            frames.append(_rows(ids[known], items, scores, self.model, fallback=False))
        if (~known).any():
            top = self.popular[:k]
            items = np.broadcast_to(top, ((~known).sum(), len(top)))
            scores = np.broadcast_to(self.seen.item_popularity[top].astype(np.float32), items.shape)
            frames.append(_rows(ids[~known], items, scores, self.model, fallback=True))
        return pd.concat(frames, ignore_index=True)


def _rows(user_ids, items, scores, model, fallback: bool) -> pd.DataFrame:
    keep = np.isfinite(scores)
    ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
    return pd.DataFrame({
        "user_id": np.repeat(user_ids, keep.sum(1)),
        "item_id": model.item_map_.to_ids(items[keep]),
        "score": scores[keep].astype(np.float32),
        "rank": ranks[keep].astype(np.int64),
        "fallback": fallback,
    })


set_model(RecsysModel())
