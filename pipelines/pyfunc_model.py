"""The MLflow pyfunc wrapper of a recsys model, logged as code (MLflow "models from code"),
so that neither the wrapper nor the weights are pickled.

Input: a frame with a `user_id` column, an optional `history` column (a list of item ids per
row) and, for a model that encodes new users from features, optional columns named after its
user features (one value per row, as in a `--user-features` file); history and features are
read for users the model does not know: they are folded in when the model can. Params:
`k` (items per user), `filter_seen` (exclude the user's training items, or a new user's
history) and `output`: "rows" gives rows user_id, item_id, score, rank, fallback, folded_in;
"lists" gives one row per input user with `item_ids` and `scores` lists, the shape
`mlflow.pyfunc.spark_udf` needs. `fallback` flags users the model does not know and could not
fold in, who get the most popular items. Ranking is the library's `Ranker`, the same as
`recsys recommend` and the HTTP endpoint. A graded model (gnolr) also takes the param `grade`
(a level name or 1-based number; "" ranks by its default level).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from recsys.data.request_features import check_frame
from recsys.inference import Ranker, at_grade, history_matrix
from recsys.models.base import load_model, load_seen

OUTPUTS = ("rows", "lists")


class RecsysModel(PythonModel):
    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["model"])
        self.seen = load_seen(context.artifacts["model"], self.model)
        self.rankers = {"": Ranker(self.model, self.seen)}  # one per level asked for

    def ranker(self, grade: str) -> Ranker:
        if grade not in self.rankers:
            self.rankers[grade] = Ranker(at_grade(self.model, grade), self.seen)
        return self.rankers[grade]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", 10))
        filter_seen = bool(params.get("filter_seen", True))
        output = str(params.get("output", "rows"))
        ranker = self.ranker(str(params.get("grade") or ""))
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        ids = model_input["user_id"].to_numpy()
        history = features = None
        if "history" in model_input.columns:
            history, _ = history_matrix(model_input["history"].tolist(), self.model.item_map_)
        columns = [c for c in model_input.columns if c not in ("user_id", "history")]
        if columns:
            features = model_input[columns].reset_index(drop=True)
            check_frame(ranker.user_features, features, "input features")
        ranked = ranker.recommend(self.model.user_map_.index_of(ids), k, history=history,
                                       features=features, exclude_seen=filter_seen)
        table = _lists if output == "lists" else _rows
        return table(ids, self.model.item_map_.to_ids(ranked.items), ranked.scores,
                     ranked.fallback, ranked.folded_in)


def _rows(user_ids, items, scores, fallback, folded_in) -> pd.DataFrame:
    keep = np.isfinite(scores)
    per_user = keep.sum(1)
    ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
    return pd.DataFrame({
        "user_id": np.repeat(user_ids, per_user),
        "item_id": items[keep],
        "score": scores[keep],
        "rank": ranks[keep].astype(np.int64),
        "fallback": np.repeat(fallback, per_user),
        "folded_in": np.repeat(folded_in, per_user),
    })


def _lists(user_ids, items, scores, fallback, folded_in) -> pd.DataFrame:
    keep = np.isfinite(scores)
    return pd.DataFrame({
        "user_id": user_ids,
        "item_ids": [row[ok].tolist() for row, ok in zip(items, keep, strict=True)],
        "scores": [row[ok].tolist() for row, ok in zip(scores, keep, strict=True)],
        "fallback": fallback,
        "folded_in": folded_in,
    })


set_model(RecsysModel())
