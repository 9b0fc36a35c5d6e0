"""Evaluation: ranking metrics and the batched full-ranking evaluator."""

from recsys.evaluate.evaluator import evaluate, mask_rows, parse_ks, top_k
from recsys.evaluate.metrics import RANKING_METRICS

__all__ = ["RANKING_METRICS", "evaluate", "mask_rows", "parse_ks", "top_k"]
