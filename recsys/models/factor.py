"""Factor models score a user-item pair as the dot product of their factor vectors."""

from __future__ import annotations

import numpy as np
import torch

from recsys.models.base import BaseRecommender


class FactorModel(BaseRecommender):
    """Base for models with user and item factor matrices: one fast scoring path for all."""

    state_rows = {"user_factors": "users", "item_factors": "items"}
    user_factors_: torch.Tensor
    item_factors_: torch.Tensor

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

    def _set_factors(self, users, items) -> None:
        self.user_factors_ = torch.as_tensor(users, dtype=torch.float32).detach().contiguous()
        self.item_factors_ = torch.as_tensor(items, dtype=torch.float32).detach().contiguous()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._set_factors(state["user_factors"], state["item_factors"])
