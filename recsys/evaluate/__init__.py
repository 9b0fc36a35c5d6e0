"""Evaluation: ranking metrics and the batched full-ranking evaluator."""

from recsys.evaluate.evaluator import evaluate
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.ranking import mask_rows, parse_ks, top_k

__all__ = ["RANKING_METRICS", "evaluate", "mask_rows", "parse_ks", "top_k"]
