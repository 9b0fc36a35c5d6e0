"""Feature-masking views of items for self-supervised two-tower training.

Yao et al., "Self-supervised Learning for Large-scale Item Recommendations" (CIKM 2021):
two views of an item come from complementary masks over its feature fields (a masked field
reads a learned default vector), then dropout of individual values inside multi-valued
features; an InfoNCE loss pulls the two views of an item together.

- RFM (random feature masking): view 1 masks a random half of the fields, view 2 the rest.
- CFM (correlated feature masking): view 1 masks a seed field drawn uniformly together with
  its `n` partners of highest mutual information (computed once on the training data), view 2
  the rest; masking correlated fields together keeps a view from reading a masked field back
  from a correlated one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from recsys.data.features import FeatureTable

DENSE_SIGN_DIMS = 8  # a dense vector is discretised by the signs of its first coordinates
NUMERIC_BINS = 10


def mutual_information(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> float:
    """MI(A, B) in nats = sum_ab P(a,b) log[P(a,b) / (P(a) P(b))] of two discrete variables.

    a, b: non-negative int codes (n,) of the same rows; weights (n,) >= 0: each row's mass
    (e.g. an item's number of training interactions; default 1 each).
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    na, nb = a.max(initial=-1) + 1, b.max(initial=-1) + 1
    joint = np.bincount(a * nb + b, weights=w, minlength=na * nb).reshape(na, nb)
    total = joint.sum()
    if total <= 0:
        return 0.0
    joint = joint / total
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def field_codes(table: FeatureTable | None, columns: Sequence[str], n_rows: int) -> list[np.ndarray]:
    """Discrete codes (n_rows,) per item field, for mutual information: the id field (each
    item its own value), then `columns` of `table`: categorical codes, the first value of a
    multi-valued row, numeric deciles (missing apart), dense vectors by the sign pattern of
    their first coordinates."""
    codes = [np.arange(n_rows)]
    for name in columns:
        column = table.columns[name]
        if column.kind == "categorical":
            codes.append(column.codes)
        elif column.kind == "multi":
            codes.append(column.padded()[:, 0])
        elif column.kind == "numeric":
            edges = np.quantile(column.values, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
            codes.append(np.where(column.missing, -1, np.searchsorted(edges, column.values)))
        else:
            signs = column.values[:, :DENSE_SIGN_DIMS] > 0
            codes.append(np.where(column.missing, -1, signs @ (1 << np.arange(signs.shape[1]))))
    return codes


def mi_matrix(codes: Sequence[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    """(F, F) pairwise mutual information of the fields' codes (diagonal: 0)."""
    n = len(codes)
    mi = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            mi[i, j] = mi[j, i] = mutual_information(codes[i], codes[j], weights)
    return mi


def cfm_groups(mi: np.ndarray, n: int | None = None) -> np.ndarray:
    """(F, F) bool: row s masks seed field s and its `n` partners of highest MI (ties: lower
    field first); default n = F // 2, at most F - 2 so that the other view keeps a field."""
    size = len(mi)
    n = min(size // 2 if n is None else n, max(size - 2, 0))
    groups = np.eye(size, dtype=bool)
    for seed in range(size):
        others = np.array([f for f in range(size) if f != seed], dtype=np.int64)
        order = others[np.argsort(-mi[seed, others], kind="stable")]
        groups[seed, order[:n]] = True
    return groups


def rfm_masks(n: int, n_fields: int, generator: torch.Generator,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, F) bool: each row masks a random half (F // 2) of the fields; the second view masks
    the complement (`~mask`)."""
    noise = torch.rand(n, n_fields, generator=generator, device=device)
    rank = noise.argsort(1).argsort(1)
    return rank < n_fields // 2


def cfm_masks(n: int, groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, F) bool: each row masks the group (`cfm_groups`) of a uniformly drawn seed field;
    the second view masks the complement."""
    seeds = torch.randint(len(groups), (n,), generator=generator, device=groups.device)
    return groups[seeds]


def drop_values(batch: Mapping[str, torch.Tensor], columns: Sequence[str], p: float,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A copy of `batch` where each value of the multi-valued `columns` ((B, L) codes, 0 =
    padding) is dropped (set to 0) with probability `p`."""
    out = dict(batch)
    if p <= 0:
        return out
    for name in columns:
        codes = batch[name]
        keep = torch.rand(codes.shape, generator=generator, device=codes.device) >= p
        out[name] = codes * keep
    return out
