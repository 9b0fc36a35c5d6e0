"""Ordinal losses for graded feedback: the cumulative link model and GNOLR's nested loss.

Labels are grades 0..L (0 = no feedback, L = the strongest). A model gives cumulative logits
eta[..., k-1] = logit P(y >= k) for k = 1..L, strictly decreasing in k, so that
P(y = k) = P(y >= k) - P(y >= k+1) > 0. That difference is computed in log space,

    log(sigmoid(x) - sigmoid(y)) = log sigmoid(x) + log sigmoid(-y) + log(1 - exp(-(x - y))),

which is finite for every x > y, however close: the official GNOLR code takes
ln(P_k - P_{k+1}) of the probabilities and returns NaN once rounding makes them equal or
crossed (papers.md section 4). Models keep eta ordered by construction (`ordered_thresholds`,
and `recsys.models.gnolr`), so no epsilon is needed here.

References: McCullagh (1980), "Regression models for ordinal data" (cumulative link);
Zhang et al., "Embed Progressive Implicit Preference in Unified Space for Deep Collaborative
Filtering" (GNOLR, KDD 2025), nested optimisation over truncated ladders.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_GAP = 1e-3  # smallest step between consecutive thresholds, so float rounding keeps order
LOG2 = math.log(2.0)


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d (Maechler 2012).

    Each branch only sees inputs where it is accurate, so neither produces an infinite
    gradient that `torch.where` would turn into NaN.
    """
    small = d <= LOG2
    near = torch.log(-torch.expm1(-torch.where(small, d, LOG2)))
    far = torch.log1p(-torch.exp(-torch.where(small, LOG2, d)))
    return torch.where(small, near, far)


def ordered_thresholds(first: torch.Tensor, raw_steps: torch.Tensor,
                       min_steps: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Strictly increasing thresholds [..., L] from the first [...] and L-1 free steps.

    theta_1 = first, theta_{k+1} = theta_k + min_steps_k + MIN_GAP + softplus(raw_k): ordered
    for any parameter values, so gradient steps can never cross them; `min_steps` (>= 0)
    keeps the steps wider still where a model needs it (GNOLR: wider than its head scales).
    """
    steps = min_steps + MIN_GAP + F.softplus(raw_steps)
    return torch.cat([first.unsqueeze(-1), first.unsqueeze(-1) + torch.cumsum(steps, -1)], -1)


def _log_exact(eta: torch.Tensor) -> torch.Tensor:
    """log P(y = k) for k = 0..L, [..., L+1], from cumulative logits eta [..., L]."""
    head = F.logsigmoid(-eta[..., :1])  # P(y = 0) = 1 - P(y >= 1)
    tail = F.logsigmoid(eta[..., -1:])  # P(y = L) = P(y >= L)
    x, y = eta[..., :-1], eta[..., 1:]
    middle = F.logsigmoid(x) + F.logsigmoid(-y) + log1mexp(x - y)
    return torch.cat([head, middle, tail], -1)


def ordinal_nll(eta: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log P(y = label) per example under cumulative logits.

    eta: [..., L] logits of P(y >= k), k = 1..L, strictly decreasing along the last axis.
    labels: [...] integer grades in 0..L. With L = 1 this is binary cross-entropy.
    """
    return -_log_exact(eta).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def cumulative_link_loss(scores: torch.Tensor, thresholds: torch.Tensor,
                         labels: torch.Tensor) -> torch.Tensor:
    """Ordinal logistic regression: P(y >= k) = sigmoid(score - theta_k), per example.

    scores: [...]; thresholds: [L] increasing (see `ordered_thresholds`); labels: [...] in 0..L.
    """
    return ordinal_nll(scores.unsqueeze(-1) - thresholds, labels)


def nested_ordinal_loss(eta: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """GNOLR's nested loss per example: sum over k = 1..L of the ordinal loss of the ladder
    truncated at grade k (grades above k count as k, logits eta[..., :k]).

    For L = 2 it is BCE(y>=1, P_1) + the full 3-class ordinal loss, as in the paper. Summed in
    closed form: a label y >= 1 contributes -sum_{k<=y} log P(y>=k) - (L - y) log P(y = y) (the
    last term absent for y = L), a label 0 contributes -L log P(y = 0).
    eta: [..., L] strictly decreasing; labels: [...] in 0..L.
    """
    n_levels = eta.shape[-1]
    labels = labels.long().unsqueeze(-1)
    log_exact = _log_exact(eta).gather(-1, labels).squeeze(-1)
    cum_at_least = torch.cumsum(F.pad(F.logsigmoid(eta), (1, 0)), -1)
    reached = cum_at_least.gather(-1, labels).squeeze(-1)
    return -(reached + (n_levels - labels.squeeze(-1)) * log_exact)
