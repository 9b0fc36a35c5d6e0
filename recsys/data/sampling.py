"""Mini-batch samplers in torch: shuffled positive pairs with uniform negative items."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recsys.data.interactions import Interactions

BITSET_CELLS = 2**31  # up to this many user x item cells (256 MB), membership is a bitset


class PairSampler:
    """Each epoch visits every positive (user, item) pair once, in a seeded random order, with
    one uniformly drawn item j per pair. With `exclude_positives`, a j that is one of the
    user's positives is redrawn a few times (vectorised; on dense rows a rare positive may
    remain); without, j is any item (as unbiased pairwise losses need). With
    `negatives=False`, batches are (users, items, None), for losses that sample otherwise.
    """

    def __init__(self, data: Interactions, batch_size: int, *, seed: int = 0,
                 device: str | torch.device = "cpu", redraws: int = 3,
                 exclude_positives: bool = True, negatives: bool = True) -> None:
        rows, cols = data.coo
        self.users = torch.from_numpy(rows).to(device)
        self.items = torch.from_numpy(cols).to(device)
        self.n_items = data.n_items
        self.membership = None  # built on the first is_positive call
        self.batch_size = batch_size
        self.redraws = redraws
        self.exclude_positives = exclude_positives
        self.with_negatives = negatives
        self.n_users = data.n_users
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a positive: one read of a bit per user x item
        cell, or, beyond BITSET_CELLS cells, a binary search of the sorted pair keys."""
        if self.membership is None:
            self.membership = self._membership()
        keys = users * self.n_items + items
        if self.membership.dtype == torch.uint8:
            return (self.membership[keys >> 3] >> (keys & 7).to(torch.uint8)) & 1 == 1
        pos = torch.searchsorted(self.membership, keys).clamp(max=len(self.membership) - 1)
        return self.membership[pos] == keys

    def _membership(self) -> torch.Tensor:
        keys = self.users * self.n_items + self.items
        cells = self.n_users * self.n_items
        if cells > BITSET_CELLS:
            return torch.sort(keys).values
        keys = keys.cpu().numpy()
        bits = np.zeros(-(-cells // 8), np.uint8)
        np.bitwise_or.at(bits, keys >> 3, np.left_shift(1, keys & 7).astype(np.uint8))
        return torch.from_numpy(bits).to(self.device)

    def negatives(self, users: torch.Tensor) -> torch.Tensor:
        items = self._draw(len(users))
        return self._avoid_positives(users, items) if self.exclude_positives else items

    def _avoid_positives(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        for _ in range(self.redraws):  # no data-dependent branch: no host sync on a GPU
            items = torch.where(self.is_positive(users, items), self._draw(len(users)), items)
        return items

    def unobserved(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n (user, item) pairs drawn uniformly from all cells, redrawing observed ones."""
        users = torch.randint(self.n_users, (n,), generator=self.generator, device=self.device)
        return users, self._avoid_positives(users, self._draw(n))

    def _draw(self, n: int) -> torch.Tensor:
        return torch.randint(self.n_items, (n,), generator=self.generator, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.users), generator=self.generator, device=self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            users = self.users[idx]
            yield users, self.items[idx], self.negatives(users) if self.with_negatives else None
