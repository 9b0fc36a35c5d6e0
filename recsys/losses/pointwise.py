"""Pointwise losses on logits, including the unbiased Rel-MF estimator (Saito et al., WSDM'20).

Each takes logits (pre-sigmoid scores) and returns the per-pair loss; callers average. The
per-pair loss is either log loss (delta1 = -log s, delta0 = -log(1 - s)) or squared loss
(delta1 = (1 - s)^2, delta0 = s^2), with s = sigmoid(logit).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PerPair = Literal["log", "square"]


def deltas(logits: torch.Tensor, per_pair: PerPair = "log") -> tuple[torch.Tensor, torch.Tensor]:
    """(delta1, delta0): the loss of calling a pair relevant / irrelevant."""
    if per_pair == "log":
        return -F.logsigmoid(logits), -F.logsigmoid(-logits)
    if per_pair == "square":
        s = torch.sigmoid(logits)
        return (1 - s) ** 2, s**2
    raise ValueError(f"per_pair must be 'log' or 'square', got {per_pair!r}")


def bce_loss(logits: torch.Tensor, clicks: torch.Tensor, per_pair: PerPair = "log") -> torch.Tensor:
    """Naive pointwise loss: every click is relevant, every non-click irrelevant."""
    d1, d0 = deltas(logits, per_pair)
    return clicks * d1 + (1 - clicks) * d0


def wmf_loss(logits: torch.Tensor, clicks: torch.Tensor, neg_weight: float,
             per_pair: PerPair = "log") -> torch.Tensor:
    """Weighted MF baseline: non-clicks weigh `neg_weight` (< 1) as weakly negative."""
    d1, d0 = deltas(logits, per_pair)
    return clicks * d1 + neg_weight * (1 - clicks) * d0


def relmf_loss(logits: torch.Tensor, clicks: torch.Tensor, propensity: torch.Tensor,
               clip: float = 0.0, per_pair: PerPair = "log", beta: float | None = None) -> torch.Tensor:
    """Rel-MF unbiased loss: (Y/theta) delta1 + (1 - Y/theta) delta0, theta = max(theta, clip).

    Its expectation over exposure equals the loss under true relevance. For a click,
    1 - Y/theta < 0, so with log loss the term rewards s -> 1 without bound; `beta` clamps each
    pair's loss below at -beta (as UBPR does), which bounds it while keeping log loss.
    """
    theta = propensity.clamp(min=clip) if clip > 0 else propensity
    w = torch.where(clicks > 0, clicks / theta, 0.0)  # a non-click weighs 0 even where theta is 0
    d1, d0 = deltas(logits, per_pair)
    loss = w * d1 + (1 - w) * d0
    return loss.clamp(min=-beta) if beta is not None else loss


def ideal_loss(logits: torch.Tensor, relevance: torch.Tensor, per_pair: PerPair = "log") -> torch.Tensor:
    """Full-information loss gamma delta1 + (1 - gamma) delta0, the target Rel-MF estimates."""
    d1, d0 = deltas(logits, per_pair)
    return relevance * d1 + (1 - relevance) * d0
