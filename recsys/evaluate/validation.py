"""Validation scores for model selection during training, computed on the training device.

`evaluate` and `ips_metrics` report many metrics and move every block of results to the
host; early stopping needs one number per epoch. `Validator` prepares the held-out pairs,
the items to mask and (for SNIPS) the inverse propensities on the device once, then scores
factor matrices block by block with one transfer at the end. Its values are those of
`evaluate(...)[metric]` and `ips_metrics(...)["snips_recall@K"]` on the same users.

On the CPU the blocks are sized to the cache and scored into one buffer kept between calls:
a fresh score matrix of all sampled users (2,000 x 8,000 floats, 64 MB) was mapped and
page-faulted on every validation, a third of its time, and the product and top-k of a
cache-sized block run faster than those of one large block (bench/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.data.propensity import Propensity
from recsys.errors import RecsysError
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.ranking import block_rows, pair_keys, top_k

CPU_BLOCK_SCORES = 2**20  # scores (4 MB) of one block on the CPU: about the size of a cache


class Validator:
    """`validator(user_factors, item_factors)` -> the mean `metric` ("ndcg@20") over `users`
    (indices with at least one `valid` pair), items of `train` excluded; with `propensity`,
    pooled SNIPS recall@K instead: sum over hit pairs of 1/theta / sum over all pairs of
    1/theta (Saito et al. 2020)."""

    def __init__(self, train: Interactions, valid: Interactions, users: np.ndarray, metric: str,
                 device: torch.device, propensity: Propensity | None = None) -> None:
        name, _, k = metric.partition("@")
        self.k, self.metric, self.device = int(k), RANKING_METRICS[name], device
        users = np.sort(np.asarray(users, dtype=np.int64))
        if len(users) == 0 or (valid.user_degree[users] == 0).any():
            raise RecsysError("validation users must each have a validation pair")
        self.n_items = valid.n_items
        self.keys = pair_keys(valid.matrix[users]).to(device)  # local row index * n_items + item
        self.n_rel = torch.from_numpy(valid.user_degree[users]).to(device)
        self.weights = None
        if propensity is not None:
            local, items = divmod(self.keys.cpu().numpy(), self.n_items)
            theta = propensity(torch.from_numpy(users[local]), torch.from_numpy(items)).double()
            if (theta <= 0).any():
                raise RecsysError("a validation click has propensity 0: clip the propensities")
            self.weights = (1 / theta).to(device)
        cpu = torch.device(device).type == "cpu"
        block = max(1, CPU_BLOCK_SCORES // max(self.n_items, 1)) if cpu else block_rows(
            self.n_items, device)
        # the CPU's score buffer, reused by every call (an accelerator's allocator caches)
        self.buffer = torch.empty(min(block, len(users)), self.n_items) if cpu else None
        self.blocks = []
        seen = train.matrix[users]
        for start in range(0, len(users), block):
            part = seen[start:start + block]
            r = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
            c = part.indices.astype(np.int64)
            mask = (torch.from_numpy(r).to(device), torch.from_numpy(c).to(device))
            self.blocks.append((torch.from_numpy(users[start:start + block]).to(device), start, mask))

    def __call__(self, user_factors: torch.Tensor, item_factors: torch.Tensor) -> float:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        items_t = item_factors.float().T
        for users, offset, mask in self.blocks:
            if self.buffer is None:
                scores = user_factors[users].float() @ items_t
            else:
                scores = torch.mm(user_factors[users].float(), items_t, out=self.buffer[:len(users)])
            scores[mask] = float("-inf")
            top, values = top_k(scores, self.k)  # the tie rule of every ranking path
            local = torch.arange(offset, offset + len(users), device=self.device)
            query = local[:, None] * self.n_items + top
            pos = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
            hits = (self.keys[pos] == query) & torch.isfinite(values)
            if hits.shape[1] < self.k:  # catalogue smaller than K: the rest are misses
                hits = torch.nn.functional.pad(hits, (0, self.k - hits.shape[1]))
            if self.weights is None:
                total += self.metric(hits, self.n_rel[offset:offset + len(users)]).sum()
            else:
                total += torch.where(hits, self.weights[pos], 0.0).sum()
        if self.weights is None:
            return float(total) / int(self.n_rel.numel())
        return float(total / self.weights.sum())
