"""Most-popular baseline: every user gets the items most users interacted with."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.models.base import BaseRecommender, register


@register("pop")
class Popularity(BaseRecommender):
    """Scores an item by its number of distinct training users (ties: lower index first)."""

    state_rows = {"popularity": "items"}

    def __init__(self) -> None:
        pass

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> Popularity:
        self._start_fit(train)
        self.popularity_ = torch.from_numpy(train.item_popularity.astype(np.float32))
        return self

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        self._check_fitted()
        pop = self.popularity_ if items is None else self.popularity_[torch.as_tensor(items)]
        return pop.expand(len(users), -1).clone()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"popularity": self.popularity_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.popularity_ = state["popularity"]
