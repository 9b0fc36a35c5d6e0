"""Ranking metrics from a hit matrix, vectorised over users.

`hits` is a bool tensor [users, K]: hits[u, r] says whether the item ranked r+1 for user u is
relevant. `n_relevant` is each user's number of relevant items. Every function returns one
value per user; averaging is the caller's job, so slices and weights stay easy.
Definitions (the same as the docs): Recall@K = |hits| / min(K, |T|); Precision@K = |hits| / K;
NDCG@K with binary gains and IDCG over min(K, |T|) items; AP@K averages precision at each hit
and divides by min(K, |T|); RR@K = 1 / rank of the first hit; HitRate@K = any hit.
"""

from __future__ import annotations

import torch


def _discounts(k: int, device=None) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=device))


def recall(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    return hits.sum(1).double() / n_relevant.clamp(max=k).double()


def precision(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.sum(1).double() / hits.shape[1]


def ndcg(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    disc = _discounts(k, hits.device)
    dcg = (hits.double() * disc).sum(1)
    idcg = torch.cumsum(disc, 0)[(n_relevant.clamp(max=k) - 1).long()]
    return dcg / idcg


def average_precision(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    h = hits.double()
    prec_at = torch.cumsum(h, 1) / torch.arange(1, k + 1, dtype=torch.float64, device=h.device)
    return (prec_at * h).sum(1) / n_relevant.clamp(max=k).double()


def reciprocal_rank(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=hits.device)
    first = torch.where(hits, ranks, torch.full_like(ranks, float("inf"))).min(1).values
    return 1.0 / first


def hit_rate(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.any(1).double()


RANKING_METRICS = {
    "recall": recall,
    "precision": precision,
    "ndcg": ndcg,
    "map": average_precision,
    "mrr": reciprocal_rank,
    "hit_rate": hit_rate,
}
