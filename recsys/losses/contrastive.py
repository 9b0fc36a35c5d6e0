"""Contrastive losses between two views of the same rows (SGL, SimGCL, XSimGCL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def first_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Boolean mask (n,) of the first occurrence of each id in `ids` (n,): the fixed-shape
    alternative to `torch.unique`, whose data-dependent output size forces a host sync on a
    GPU."""
    sorted_ids, order = torch.sort(ids, stable=True)
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return torch.empty_like(first).scatter_(0, order, first)


def distinct(ids: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every distinct value of `ids` (n,) once, in a tensor of fixed length m = min(n, bound),
    with a mask (m,) of the entries that are distinct (the rest repeat one of them).

    `bound` is the number of values `ids` can take (e.g. the number of users), so the
    distinct ones always fit: on a small catalogue the contrastive loss then costs
    O(bound^2), not O(batch^2) as with `first_occurrence`. Shapes depend on n and bound alone.
    """
    sorted_ids = torch.sort(ids).values
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    order = torch.argsort((~first).to(torch.uint8), stable=True)[:min(len(ids), bound)]
    return sorted_ids[order], first[order]


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float,
             keep: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018) over cosine similarities, averaged over rows.

    Row r of `view1` (n, d) should match row r of `view2` (n, d) against the other rows of
    `view2`: loss_r = -log softmax_c(cos(v1_r, v2_c) / temperature)[r]. With `keep` (n,) bool
    (e.g. from `distinct`), only kept rows count, both as anchors and as negatives: the loss
    over the batch's unique users, with fixed shapes.
    """
    a, b = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    positive = (a * b).sum(-1) / temperature
    logits = a @ b.T / temperature
    if keep is None:
        return (torch.logsumexp(logits, 1) - positive).mean()
    logits = logits.masked_fill(~keep[None, :], float("-inf"))
    loss = torch.where(keep, torch.logsumexp(logits, 1) - positive, 0.0)
    return loss.sum() / keep.sum().clamp(min=1)
