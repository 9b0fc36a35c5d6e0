"""Factor models score a user-item pair as the dot product of their factor vectors."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureTable
from recsys.errors import RecsysError
from recsys.models.base import BaseRecommender

FOLD_IN_BUDGET = 2**22  # float64 entries of padded history factors held at once while folding in


class FactorModel(BaseRecommender):
    """Base for models with user and item factor matrices: one fast scoring path for all.

    New users are folded in from the items they interacted with (`user_vectors(history=...)`):
    the user vector that best explains their history with the item factors V held fixed, by the
    implicit-feedback least squares of Hu, Koren & Volinsky (2008): every item is a 0 target
    with confidence 1, each history item a 1 target with confidence 1 + `fold_in_alpha` * weight
    (a trailing bias column, as in implicit's BPR, shifts each target by -bias), and a ridge of
    `fold_in_reg` * trace(V'V) / factors, i.e. 30x the mean eigenvalue of V'V. The ridge is
    strong on purpose: models trained with a ranking loss (BPR, MF) are not fitted to 0/1
    targets, and their new users rank best with a vector close to the confidence-weighted sum
    of their history's item factors (on MovieLens-100K: 0.94-0.95x the NDCG@20 of the same users
    as known users for `mf`, 0.95-1.0x for `bpr`; ridges of 0.1x-1x give 0.67-0.78x for `mf`;
    bench/foldin.py). ALS overrides this with its exact user step.
    """

    state_rows = {"user_factors": "users", "item_factors": "items"}
    user_factors_: torch.Tensor
    item_factors_: torch.Tensor
    new_user_inputs: ClassVar[tuple[str, ...]] = ("history",)
    fold_in_alpha: ClassVar[float] = 10.0
    fold_in_reg: ClassVar[float] = 30.0
    fixed_user_columns: ClassVar[int] = 0  # trailing user-factor columns fixed to 1 (item biases)

    def user_factors(self) -> torch.Tensor:
        self._check_fitted()
        return self.user_factors_

    def item_factors(self) -> torch.Tensor:
        self._check_fitted()
        return self.item_factors_

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        self._check_fitted()
        device = self.user_factors_.device
        u = self.user_factors_[torch.as_tensor(np.asarray(users), dtype=torch.long, device=device)]
        v = self.item_factors_ if items is None else self.item_factors_[
            torch.as_tensor(np.asarray(items), dtype=torch.long, device=device)]
        return u @ v.T

    def user_vectors(self, features: FeatureTable | None = None,
                     history: sp.csr_matrix | None = None) -> torch.Tensor:
        """Factors [n, d] for n new users from `history` (CSR [n, n_items], weights as in
        training), on the item factors' device; a user with an empty history gets zeros."""
        self._check_fitted()
        if features is not None:
            raise RecsysError(f"{self.name} encodes new users from their item history, not from "
                              "user features")
        if history is None:
            raise RecsysError(f"{self.name} needs a history of items to encode a new user")
        history = sp.csr_matrix(history, dtype=np.float32)
        if history.shape[1] != len(self.item_map_):
            raise RecsysError(f"history has {history.shape[1]} item columns, the model "
                              f"{len(self.item_map_)} items")
        return self._fold_in(history)

    def _fold_in(self, history: sp.csr_matrix) -> torch.Tensor:
        """Least squares fold-in (see the class docstring), for all users at once: users are
        grouped by history length and each group solved with one batched product and solve."""
        items = self.item_factors_.detach().double()
        device, fixed = items.device, self.fixed_user_columns
        free = items[:, :items.shape[1] - fixed]
        bias = items[:, items.shape[1] - fixed:].sum(1)  # zeros without fixed columns
        d = free.shape[1]
        gram = free.T @ free
        # every item a 0 target with confidence 1 (V'V, and V'(0 - bias) with a fixed column),
        # plus the ridge; each history item adds alpha w v v' and (1 + alpha w (1 - b_i)) v
        base_a = gram + self.fold_in_reg * torch.trace(gram) / d * torch.eye(d, dtype=gram.dtype,
                                                                             device=device)
        base_b = -(free.T @ bias)
        lengths = np.diff(history.indptr)
        x = torch.zeros(history.shape[0], d, dtype=gram.dtype, device=device)
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]  # an empty history stays a zero vector
        start = 0
        while start < len(order):  # groups of similar length, each padded to its longest
            padded = np.arange(1, len(order) - start + 1) * lengths[order[start:]] * d
            stop = start + max(1, int(np.searchsorted(padded, FOLD_IN_BUDGET, side="right")))
            users = order[start:stop]
            x[torch.as_tensor(users, device=device)] = self._solve_group(
                history[users], free, bias, base_a, base_b)
            start = stop
        return torch.cat([x, torch.ones(len(x), fixed, dtype=x.dtype, device=device)], 1).float()

    def _solve_group(self, rows: sp.csr_matrix, free: torch.Tensor, bias: torch.Tensor,
                     base_a: torch.Tensor, base_b: torch.Tensor) -> torch.Tensor:
        """Solve the fold-in of users whose histories are `rows`, padded to the longest."""
        device, n = free.device, rows.shape[0]
        lengths = np.diff(rows.indptr)
        width = int(lengths.max())
        slot = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lengths)
        user = np.repeat(np.arange(n), lengths)
        index = torch.zeros(n, width, dtype=torch.long, device=device)
        weight = torch.zeros(n, width, dtype=free.dtype, device=device)
        at = (torch.as_tensor(user, device=device), torch.as_tensor(slot, device=device))
        index[at] = torch.as_tensor(rows.indices.astype(np.int64), device=device)
        weight[at] = self.fold_in_alpha * torch.as_tensor(rows.data, device=device).double()
        v = free[index]  # [n, width, d]; padded slots have weight 0 and count nowhere
        a = base_a + v.transpose(1, 2) @ (weight[..., None] * v)
        present = torch.zeros_like(weight)
        present[at] = 1.0
        coef = present + weight * (1 - bias[index])
        b = base_b + (coef[..., None] * v).sum(1)
        return torch.linalg.solve(a, b)

    def _set_factors(self, users, items) -> None:
        self.user_factors_ = torch.as_tensor(users, dtype=torch.float32).detach().contiguous()
        self.item_factors_ = torch.as_tensor(items, dtype=torch.float32).detach().contiguous()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._set_factors(state["user_factors"], state["item_factors"])
