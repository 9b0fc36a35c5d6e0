"""The pieces LLMRec (Wei et al., WSDM 2024) adds to a graph model: side-information fusion,
augmented BPR with loss-based pruning, and masked-feature (MAE) reconstruction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def keep_smallest(losses: torch.Tensor, drop: float) -> torch.Tensor:
    """The per-term losses left after dropping the largest-loss `drop` fraction, shape (m',).

    LLMRec's denoising prunes augmented BPR terms with the largest loss, the likeliest to be
    noise. (The official code's `prune_loss` sorts log-sigmoid(s_ui - s_uj) ascending and keeps
    the first 1 - rho, which keeps the largest-loss terms: the opposite of the paper; we
    follow the paper.) At least one term is kept when there are any.
    """
    if drop <= 0 or len(losses) == 0:
        return losses
    keep = max(1, math.ceil((1 - drop) * len(losses)))
    return torch.topk(losses, keep, largest=False, sorted=False).values


def sce_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Scaled cosine error mean((1 - cos(pred, target))^alpha) over rows (GraphMAE; LLMRec)."""
    return (1 - F.cosine_similarity(pred, target, dim=-1)).pow(alpha).mean()


class SideInfo(nn.Module):
    """Text vectors of users and items, projected to the embedding size and fused.

    `fuse` adds weight * normalize(W x) to each node's graph embedding (LLMRec adds
    normalised profile and attribute features with fixed weights). `mae_loss` masks a
    `rate` fraction of rows, replacing them with the mean vector in a copy (the official
    code overwrites the stored features, so corruption accumulates over batches), encodes
    with the same projection and the graph propagation, decodes back, and scores the masked
    rows with `sce_loss`.
    """

    def __init__(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("user_x", user_vectors.float())
        self.register_buffer("item_x", item_vectors.float())
        width = item_vectors.shape[1]
        self.user_proj, self.item_proj = nn.Linear(width, dim), nn.Linear(width, dim)
        self.user_dec, self.item_dec = nn.Linear(dim, width), nn.Linear(dim, width)

    def fuse(self, users: torch.Tensor, items: torch.Tensor, user_weight: float,
             item_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_users, d), (n_items, d) graph embeddings plus the weighted side vectors."""
        if user_weight:
            users = users + user_weight * F.normalize(self.user_proj(self.user_x), dim=-1)
        if item_weight:
            items = items + item_weight * F.normalize(self.item_proj(self.item_x), dim=-1)
        return users, items

    def mae_loss(self, propagate: Callable[[torch.Tensor], torch.Tensor], rate: float,
                 alpha: float = 2.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction error of the masked rows (a scalar): projected side vectors of all
        nodes (users, then items) go through `propagate`, (N, d) -> (N, d), so a masked node
        is rebuilt from its neighbours, as in GraphMAE."""
        xs = (self.user_x, self.item_x)
        masked, chosen = [], []
        for x in xs:
            rows = torch.randperm(len(x), device=x.device, generator=generator)[:max(1, int(rate * len(x)))]
            copy = x.clone()
            copy[rows] = x.mean(0)
            masked.append(copy)
            chosen.append(rows)
        nodes = propagate(torch.cat([self.user_proj(masked[0]), self.item_proj(masked[1])]))
        users, items = nodes[:len(self.user_x)], nodes[len(self.user_x):]
        return (sce_loss(self.user_dec(users[chosen[0]]), xs[0][chosen[0]], alpha)
                + sce_loss(self.item_dec(items[chosen[1]]), xs[1][chosen[1]], alpha))
