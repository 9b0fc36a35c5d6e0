"""Factor models score a user-item pair as the dot product of their factor vectors."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureTable
from recsys.errors import RecsysError
from recsys.factor_table import FactorTable
from recsys.models.base import BaseRecommender

FOLD_IN_BUDGET = 2**22  # float64 entries of padded history factors held at once while folding in


class FactorModel(BaseRecommender):
    """Base for models with user and item factor matrices: one fast scoring path for all.

    New users are folded in from the items they interacted with (`user_vectors(history=...)`):
    the user vector that best explains their history with the item factors V held fixed, by the
    implicit-feedback least squares of Hu, Koren & Volinsky (2008): every item is a 0 target
    with confidence 1, each history item a 1 target with confidence 1 + `fold_in_alpha` * weight,
    and a ridge of `fold_in_reg` * trace(V'V) / factors, i.e. 30x the mean eigenvalue of V'V.
    The ridge is strong on purpose: models trained with a ranking loss (BPR, MF) are not fitted
    to 0/1 targets, and their new users rank best with a vector close to the confidence-weighted
    sum of their history's item factors (on MovieLens-100K: 0.94-0.95x the NDCG@20 of the same
    users as known users for `mf`; ridges of 0.1x-1x give 0.67-0.78x; bench/foldin.py). ALS
    overrides this with its exact user step.

    Trailing item-bias columns (`fixed_user_columns`, matched by user columns of ones: implicit's
    BPR, `mf` with `item_bias`) take no part in the solve, and the solved vector is scaled to the
    mean norm of the known users' vectors. The ridge shrinks the vector about 20x, harmless to a
    ranking by x.v alone, but against the biases it left the ranking to them (popular items):
    treating the columns as -bias shifts of the targets gave `mf` with `item_bias` 0.74-0.79x of
    the known users' NDCG@20 on MovieLens-100K, this gives 0.99x (bpr: 0.96-1.0x, now
    1.25-1.29x; seeds 0-2, bench/RESULTS.md).

    The factors are held as two `FactorTable`s (`factor_tables()`): dense tensors after
    training; loaded from a folder, a table stays scipy CSR when that is smaller (a model
    trained at `density` < 1), and scoring, ranking and fold-in read it without densifying.
    `user_factors_` / `item_factors_` are the dense tensors (a new dense copy of a CSR table).
    """

    state_rows = {"user_factors": "users", "item_factors": "items"}
    # tensors of `_state()` that loading may hand over as CSR (`_set_factors` keeps them so)
    sparse_state: ClassVar[frozenset[str]] = frozenset(state_rows)
    tables_: tuple[FactorTable, FactorTable]
    new_user_inputs: ClassVar[tuple[str, ...]] = ("history",)
    fold_in_alpha: ClassVar[float] = 10.0
    fold_in_reg: ClassVar[float] = 30.0
    fixed_user_columns: ClassVar[int] = 0  # trailing user-factor columns fixed to 1 (item biases)

    @property
    def user_factors_(self) -> torch.Tensor:
        return self.tables_[0].dense()

    @user_factors_.setter
    def user_factors_(self, value: torch.Tensor) -> None:
        self.tables_ = (FactorTable(value), self.tables_[1])

    @property
    def item_factors_(self) -> torch.Tensor:
        return self.tables_[1].dense()

    @item_factors_.setter
    def item_factors_(self, value: torch.Tensor) -> None:
        self.tables_ = (self.tables_[0], FactorTable(value))

    def user_factors(self) -> torch.Tensor:
        self._check_fitted()
        return self.user_factors_

    def item_factors(self) -> torch.Tensor:
        self._check_fitted()
        return self.item_factors_

    def factor_tables(self) -> tuple[FactorTable, FactorTable]:
        """(users [n_users, d], items [n_items, d]) as held, dense or CSR."""
        self._check_fitted()
        return self.tables_

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        users_t, items_t = self.factor_tables()
        table = items_t if items is None else items_t.rows(items)
        return table.scores(users_t.dense_rows(users))

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
        grouped by history length and each group solved with one batched product and solve.
        Reads the item table through its Gram matrix and the rows of the history items only."""
        (users, table), fixed = self.factor_tables(), self.fixed_user_columns
        device = table.device
        d = table.shape[1] - fixed
        gram = table.gram()[:d, :d]
        # every item a 0 target with confidence 1 (V'V) plus the ridge; each history item adds
        # alpha w v v' and (1 + alpha w) v
        base_a = gram + self.fold_in_reg * torch.trace(gram) / d * torch.eye(d, dtype=gram.dtype,
                                                                             device=device)
        lengths = np.diff(history.indptr)
        x = torch.zeros(history.shape[0], d, dtype=gram.dtype, device=device)
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]  # an empty history stays a zero vector
        start = 0
        while start < len(order):  # groups of similar length, each padded to its longest
            padded = np.arange(1, len(order) - start + 1) * lengths[order[start:]] * d
            stop = start + max(1, int(np.searchsorted(padded, FOLD_IN_BUDGET, side="right")))
            group = order[start:stop]
            x[torch.as_tensor(group, device=device)] = self._solve_group(
                history[group], table, d, base_a)
            start = stop
        if fixed:  # against the biases, the scale of the known users' vectors
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            x = x * (users.mean_norm(d) / norms.clamp_min(1e-300))
        return torch.cat([x, torch.ones(len(x), fixed, dtype=x.dtype, device=device)], 1).float()

    def _solve_group(self, rows: sp.csr_matrix, table: FactorTable, d: int,
                     base_a: torch.Tensor) -> torch.Tensor:
        """Solve the fold-in of users whose histories are `rows`, padded to the longest, on the
        first `d` columns of the item table (the rest are item biases)."""
        device, n = table.device, rows.shape[0]
        lengths = np.diff(rows.indptr)
        width = int(lengths.max())
        slot = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lengths)
        user = np.repeat(np.arange(n), lengths)
        index = np.zeros((n, width), dtype=np.int64)
        index[user, slot] = rows.indices
        weight = torch.zeros(n, width, dtype=base_a.dtype, device=device)
        at = (torch.as_tensor(user, device=device), torch.as_tensor(slot, device=device))
        weight[at] = self.fold_in_alpha * torch.as_tensor(rows.data, device=device).double()
        # [n, width, d + fixed]; padded slots have weight 0 and count nowhere
        v = table.dense_rows(index.ravel()).double().view(n, width, -1)[..., :d]
        a = base_a + v.transpose(1, 2) @ (weight[..., None] * v)
        present = torch.zeros_like(weight)
        present[at] = 1.0
        b = ((present + weight)[..., None] * v).sum(1)
        return torch.linalg.solve(a, b)

    def _set_factors(self, users, items) -> None:
        """Hold `users` and `items` (tensors or arrays, or CSR matrices from a loaded folder,
        kept CSR when that is smaller: `FactorTable.held`) as float32 tables."""
        self.tables_ = (FactorTable.held(users), FactorTable.held(items))

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._set_factors(state["user_factors"], state["item_factors"])
