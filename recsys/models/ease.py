"""EASE: a closed-form item-item model (Steck, "Embarrassingly Shallow Autoencoders for Sparse
Data", WWW 2019)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender, register
from recsys.models.params import Device, Positive
from recsys.models.space import Float
from recsys.train import resolve_device


@register("ease")
class EASE(BaseRecommender):
    """Item-item weights B minimising ||X - XB||^2 + regularization * ||B||^2 with diag(B) = 0,
    in closed form: P = (X^T X + regularization * I)^-1, B_ij = -P_ij / P_jj, B_jj = 0.
    A user's scores are X_u B, where X is the binary training matrix (weights are ignored).

    Memory: the Gram matrix and its inverse are dense items x items float64 (8 n^2 bytes
    each, 2 * 8 * 20000^2 = 6.4 GB at 20,000 items), solved by Cholesky on `device`; B is kept
    in float32. Above `max_items` items, fit is an error naming the memory it would need
    (there is no approximation): raise `max_items` where the memory is there, or drop rare
    items from the training data. The model stores X (sparse) and B, so it scores every
    training user and serves like any other model; there are no user factors.
    """

    search_space = {"regularization": Float(1.0, 1e4, log=True)}
    test_params: ClassVar[dict] = {"regularization": 50.0}
    state_rows = {"weights": "items"}

    def __init__(self, regularization: Positive[float] = 500.0, max_items: Positive[int] = 20000,
                 device: Device = "auto") -> None:
        self.regularization = regularization
        self.max_items = max_items
        self.device = device

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> EASE:
        n = train.n_items
        if n > self.max_items:
            raise RecsysError(f"ease: {n} items need two dense {n} x {n} float64 matrices "
                              f"({2 * 8 * n * n / 1e9:.1f} GB); the limit is max_items="
                              f"{self.max_items}: raise it if the memory is there, or drop rare items")
        self._start_fit(train)
        x = train.matrix.copy().astype(np.float64)
        x.data[:] = 1.0
        device = resolve_device(self.device)
        gram = torch.from_numpy((x.T @ x).toarray()).to(device)
        gram.diagonal().add_(self.regularization)
        p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        del gram
        weights = p.div_(-p.diagonal().clone())  # column j divided by -P_jj
        weights.diagonal().zero_()
        self.weights_ = weights.float()
        self._set_matrix(x.astype(np.float32).tocsr())
        return self

    def _set_matrix(self, matrix: sp.csr_matrix) -> None:
        matrix.sort_indices()
        self.matrix_ = matrix

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        """X[users] @ B[:, items], [len(users), len(items) or n_items] float32."""
        self._check_fitted()
        rows = self.matrix_[np.asarray(users, dtype=np.int64)].tocoo()
        device = self.weights_.device
        index = torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64))
        x = torch.sparse_coo_tensor(index, torch.from_numpy(rows.data), rows.shape,
                                    check_invariants=False).to(device)
        weights = self.weights_ if items is None else self.weights_[
            :, torch.as_tensor(np.asarray(items), dtype=torch.long, device=device)]
        return torch.sparse.mm(x, weights)

    def _state(self) -> dict[str, torch.Tensor]:
        m = self.matrix_
        return {"weights": self.weights_, "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
                "indices": torch.from_numpy(m.indices.astype(np.int64)),
                "data": torch.from_numpy(m.data)}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.weights_ = state["weights"]
        n_items = self.weights_.shape[0]
        indptr = state["indptr"].numpy()
        self._set_matrix(sp.csr_matrix((state["data"].numpy(), state["indices"].numpy(), indptr),
                                       shape=(len(indptr) - 1, n_items)))
