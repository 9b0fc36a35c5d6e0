"""Pairwise ranking losses: BPR and its unbiased variant UBPR (Saito, ICTIR'20)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian Personalised Ranking per pair: -log sigmoid(s_ui - s_uj) (Rendle et al. 2009)."""
    return -F.logsigmoid(pos_scores - neg_scores)


def ubpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, pos_propensity: torch.Tensor,
              neg_clicks: torch.Tensor, neg_propensity: torch.Tensor, clip: float = 0.0,
              beta: float | None = None) -> torch.Tensor:
    """Unbiased BPR per triple (u, i clicked, j any item):
    -(1/theta_ui) (1 - Y_uj/theta_uj) log sigmoid(s_ui - s_uj).

    Propensities are floored at `clip`; with `beta`, each triple's loss is clamped below at
    -beta (the non-negative variant), since Y_uj/theta_uj > 1 makes the weight negative.
    """
    if clip > 0:
        pos_propensity, neg_propensity = pos_propensity.clamp(min=clip), neg_propensity.clamp(min=clip)
    weight = (1 - torch.where(neg_clicks > 0, neg_clicks / neg_propensity, 0.0)) / pos_propensity
    loss = -weight * F.logsigmoid(pos_scores - neg_scores)
    return loss.clamp(min=-beta) if beta is not None else loss
