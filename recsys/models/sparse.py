"""Dynamic sparse embedding tables for torch families (`density` < 1; recsys.sparsity)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recsys.models.params import NonNegative, Share
from recsys.sparsity import DynamicSparsity


@dataclass(eq=False, repr=False, kw_only=True)
class SparseTables:
    """Mixin for a TorchRecommender whose parameters are embedding tables: `density` < 1
    trains each table at that share of non-zero weights by dynamic sparse learning (Wang et
    al., WSDM'24): random masks, after each step the weights and Adam moments masked, every
    `prune_every` steps the `prune_ratio` share (cosine-annealed over all `epochs`) of each
    mask with the smallest |w| moved to the zeros of largest |gradient|. `prune_every=0`
    updates every 3 epochs whatever the batch size, about the paper's rate (3000 steps of
    batch 1024 on ML-1M); a fixed 1000 steps would leave lightgcn's masks static on
    MovieLens-100K (125 of its epochs). The default density 1.0 is dense training, unchanged.
    Saved folders store such factors as CSR (recsys.models.persist).
    """

    density: Share = 1.0
    prune_every: NonNegative[int] = 0  # steps; 0: every 3 epochs
    prune_ratio: Share = 0.5

    def hooks(self) -> Sequence[object]:
        hooks = list(super().hooks())
        self.sparsity_ = None
        if self.density < 1:
            tables = [p for p in self.module_.parameters() if p.requires_grad and p.dim() == 2]
            steps = len(self.sampler_)  # per epoch
            self.sparsity_ = DynamicSparsity(
                tables, self.density, every=self.prune_every or 3 * steps, ratio=self.prune_ratio,
                total=self.epochs * steps, seed=self.seed)
            hooks.append(self.sparsity_)
        return hooks
