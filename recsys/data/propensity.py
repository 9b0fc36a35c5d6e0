"""Exposure propensities theta: the probability that a user saw an item (Saito et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from recsys.errors import RecsysError


@dataclass(frozen=True)
class Propensity:
    """theta per item (`item`, length n_items), per user-item pair (`pair`, dense users x
    items), or from exposure draws: with `user_draws`, user u saw user_draws[u] items drawn
    with replacement from the distribution `item`, so theta_ui = 1 - (1 - item_i)^draws_u.
    Floored at `clip`; `rule` records how they were obtained.
    """

    item: np.ndarray | None = None
    pair: np.ndarray | None = None
    clip: float = 0.0
    rule: str = "given"
    user_draws: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.item is None) == (self.pair is None):
            raise RecsysError("a Propensity needs exactly one of item or pair propensities")
        if self.user_draws is not None and self.item is None:
            raise RecsysError("user_draws needs the item exposure distribution")
        values = self.item if self.item is not None else self.pair
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
            raise RecsysError("propensities must lie in [0, 1]")
        if not 0 <= self.clip <= 1:
            raise RecsysError(f"propensity clip must lie in [0, 1], got {self.clip}")

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """theta for each (user, item) pair, clipped, on the pairs' device."""
        if self.user_draws is not None:
            p = self._tensor(self.item, items.device, torch.float64)[items]
            draws = self._tensor(self.user_draws, items.device, torch.float64)[users]
            theta = (-torch.expm1(draws * torch.log1p(-p))).float()  # 1 - (1 - p)^m, stably
        elif self.item is not None:
            theta = self._tensor(self.item, items.device)[items]
        else:
            theta = self._tensor(self.pair, items.device)[users, items]
        return theta.clamp(min=self.clip) if self.clip > 0 else theta

    def _tensor(self, values: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
        cache = self.__dict__.setdefault("_cache", {})
        key = (id(values), str(device), dtype)
        if key not in cache:
            cache[key] = torch.as_tensor(values, dtype=dtype, device=device)
        return cache[key]

    def with_clip(self, clip: float) -> Propensity:
        return replace(self, clip=clip)

    def describe(self) -> str:
        return f"{self.rule}, clipped at {self.clip}" if self.clip > 0 else self.rule


def item_propensity(item_clicks: np.ndarray, eta: float = 0.5, clip: float = 0.0) -> Propensity:
    """theta_i = (n_i / max_j n_j) ** eta from per-item click counts aligned to item indices
    (use `Interactions.item_popularity`, a bincount with minlength n_items: counting with
    np.unique would silently shift theta for items without clicks).
    """
    counts = np.asarray(item_clicks, dtype=np.float64)
    if counts.ndim != 1 or counts.max(initial=0) <= 0:
        raise RecsysError("item propensities need at least one click")
    if eta < 0:
        raise RecsysError(f"propensity eta must be >= 0, got {eta}")
    theta = (counts / counts.max()) ** eta
    return Propensity(item=theta, clip=clip, rule=f"item popularity (n_i / max n)^{eta}")
