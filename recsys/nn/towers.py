"""Feature encoders and MLP towers for two-tower retrieval.

A tower reads *fields*: an id embedding, one field per side-feature column, and optionally
the mean of embeddings of a list of items (a user's history). Each field becomes a vector of
the same width `dim`; a field can be *masked* per row, which replaces it by a learned default
vector of that field (the masked-feature embedding of Yao et al., CIKM 2021). The fields are
concatenated and passed through an MLP; outputs are L2-normalised, so scores are cosines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.features import (
    CategoricalColumn,
    DenseColumn,
    FeatureTable,
    MultiColumn,
    NumericColumn,
)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of `sizes` (input first) with ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def encodable_columns(table: FeatureTable | None) -> list[str]:
    """The columns of `table` a FeatureEncoder reads (text columns need encoding first)."""
    if table is None:
        return []
    kinds = (CategoricalColumn, MultiColumn, NumericColumn, DenseColumn)
    return [n for n, c in table.columns.items() if isinstance(c, kinds)]


class FeatureEncoder(nn.Module):
    """One `dim`-vector per feature column of a FeatureTable, from `TorchFeatures.batch`.

    categorical: nn.Embedding; multi-valued: nn.EmbeddingBag(mean, padding_idx=0) (a row
    whose values were all dropped reads as zeros); numeric: a linear map of (value,
    missing); dense: a linear map of (vector, missing). forward(batch) -> (B, n_fields, dim).
    """

    def __init__(self, table: FeatureTable, dim: int) -> None:
        super().__init__()
        self.names = encodable_columns(table)
        self.kinds = {n: table.columns[n].kind for n in self.names}
        self.layers = nn.ModuleDict()
        for name in self.names:
            column = table.columns[name]
            if isinstance(column, CategoricalColumn):
                layer = nn.Embedding(column.vocab.size, dim)
                nn.init.normal_(layer.weight, std=0.1)
            elif isinstance(column, MultiColumn):
                layer = nn.EmbeddingBag(column.vocab.size, dim, mode="mean", padding_idx=0)
                nn.init.normal_(layer.weight, std=0.1)
            elif isinstance(column, NumericColumn):
                layer = nn.Linear(2, dim)
            else:
                layer = nn.Linear(column.dim + 1, dim)
            self.layers[self._key(name)] = layer

    @staticmethod
    def _key(name: str) -> str:
        return "f_" + name.replace(".", "_")  # ModuleDict keys cannot hold dots

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = []
        for name in self.names:
            layer, kind = self.layers[self._key(name)], self.kinds[name]
            if kind in ("categorical", "multi"):
                out.append(layer(batch[name]))
            else:
                value = batch[name]
                value = value[:, None] if value.dim() == 1 else value
                out.append(layer(torch.cat([value, batch[f"{name}:missing"][:, None]], 1)))
        return torch.stack(out, 1)


class Tower(nn.Module):
    """Fields (an id embedding, feature columns, optionally a pooled item list) -> MLP ->
    L2-normalised vector.

    `n_ids` rows of id embeddings (row 0: unknown, e.g. a cold-start item or a new user);
    `table`: the side features (or None); `pool` > 0: rows of an item embedding table that
    is mean-pooled over a padded list of item rows (0 = padding), e.g. the user's history.
    forward(ids (B,), features {name: tensor} or None, items (B, L) or None, mask (B, F) bool
    or None) -> (B, hidden[-1]); `n_fields` = F is the number of fields, in the order id,
    feature columns, pooled items.
    """

    def __init__(self, n_ids: int, table: FeatureTable | None, dim: int,
                 hidden: Sequence[int], pool: int = 0) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_ids, dim)
        nn.init.normal_(self.ids.weight, std=0.1)
        self.features = FeatureEncoder(table, dim) if encodable_columns(table) else None
        self.pool = nn.Embedding(pool, dim, padding_idx=0) if pool else None
        if self.pool is not None:
            nn.init.normal_(self.pool.weight, std=0.1)
        self.n_fields = 1 + (len(self.features.names) if self.features else 0) + bool(pool)
        # the vector of a masked field (one per field)
        self.default = nn.Parameter(torch.zeros(self.n_fields, dim))
        self.mlp = mlp([self.n_fields * dim, *hidden])

    @property
    def field_names(self) -> list[str]:
        return ["id", *(self.features.names if self.features else []),
                *(["history"] if self.pool is not None else [])]

    def fields(self, ids: torch.Tensor, features: Mapping[str, torch.Tensor] | None = None,
               items: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F, dim) field vectors."""
        parts = [self.ids(ids)[:, None]]
        if self.features is not None:
            parts.append(self.features(features))
        if self.pool is not None:
            present = (items > 0).float()
            summed = (self.pool(items) * present[..., None]).sum(1)
            parts.append((summed / present.sum(1, keepdim=True).clamp(min=1))[:, None])
        return torch.cat(parts, 1)

    def forward(self, ids: torch.Tensor, features: Mapping[str, torch.Tensor] | None = None,
                items: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        fields = self.fields(ids, features, items)
        if mask is not None:
            fields = torch.where(mask[..., None], self.default, fields)
        return F.normalize(self.mlp(fields.flatten(1)), dim=-1)
