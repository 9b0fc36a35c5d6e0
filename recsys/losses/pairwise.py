"""Pairwise ranking losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian Personalised Ranking: mean of -log sigmoid(s_ui - s_uj) (Rendle et al. 2009)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()
