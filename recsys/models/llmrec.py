"""LLMRec (Wei et al., WSDM 2024) on LightGCN: augmented triples, side information, denoising.

`llmrec` is `lightgcn` plus what an augmentation folder (`recsys augment`) brings:
- *augmented BPR*: each batch of B training triples gets about `aug_rate` * B augmented
  (user, liked, disliked) triples appended, drawn uniformly on the device; the graph itself
  is not changed (as in the paper);
- *pruning*: of those augmented terms, the `prune` fraction with the largest loss is dropped
  each batch (the paper's intent; see `keep_smallest` for the official code's reversed sort);
- *side information*: text vectors of item attributes and user profiles, projected to the
  embedding size, normalised and added to the propagated embeddings with weights
  `item_side` and `user_side` (the exported factors include them);
- *MAE*: with `mae_weight` > 0, a `mae_rate` fraction of side vectors is masked and rebuilt
  through the graph (scaled cosine error, exponent `mae_alpha`); off by default, as in the
  official code.

Without `augmentation`, the offline augmenter runs first (candidates: the top `candidates` of an `als`
model fitted on the same data; text similarity picks the triples), on the item text given by
`train.item_text` (`--item-text FILE`). The epoch is chosen on a validation split carved from
the training data, never on test data (the official code selects on test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.losses import bpr_loss
from recsys.models.base import register
from recsys.models.graph import LightGCNRecommender
from recsys.models.llmrec_parts import SideInfo, keep_smallest
from recsys.models.params import Fraction, NonNegative, Positive
from recsys.nn.graph import layer_mean, propagate


class SideFused(nn.Module):
    """A graph encoder whose node embeddings (users, then items) get side vectors added.

    The last output is kept in `last`, so a loss can score extra pairs on the embeddings of
    the same forward pass.
    """

    def __init__(self, graph: nn.Module, side: SideInfo, n_users: int, user_weight: float,
                 item_weight: float) -> None:
        super().__init__()
        self.graph, self.side = graph, side
        self.n_users, self.user_weight, self.item_weight = n_users, user_weight, item_weight
        self.last: torch.Tensor | None = None

    @property
    def ego(self) -> nn.Embedding:
        return self.graph.ego

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, outputs = self.graph(*args, **kwargs)
        users, items = self.side.fuse(final[:self.n_users], final[self.n_users:],
                                      self.user_weight, self.item_weight)
        self.last = torch.cat([users, items])
        return self.last, outputs


@register("llmrec")
@dataclass(eq=False, repr=False, kw_only=True)
class LLMRecRecommender(LightGCNRecommender):
    """`lightgcn` with LLMRec's augmented triples, side information and denoising (above)."""

    uses: ClassVar[frozenset[str]] = frozenset({"item_text"})

    augmentation: str | None = None
    encoder: str | None = None
    candidates: Positive[int] = 10
    aug_rate: NonNegative[float] = 0.1
    prune: Fraction = 0.5
    user_side: NonNegative[float] = 0.1
    item_side: NonNegative[float] = 0.1
    mae_weight: NonNegative[float] = 0.0
    mae_rate: Fraction = 0.1
    mae_alpha: Positive[float] = 2.0

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks=()) -> LLMRecRecommender:
        if self.augment != "none":
            raise RecsysError("llmrec: augment must be none (graph views and LLM augmentation "
                              "are not combined)")
        from recsys.augment.text import TextEncoder

        encoder = TextEncoder(self.encoder, device=self.device, progress=self.progress)
        aug = self._augmentation_for(train, encoder)
        self.user_vectors_ = torch.from_numpy(encoder.encode(aug.user_text))
        self.item_vectors_ = torch.from_numpy(encoder.encode(aug.item_text))
        self.triples_ = torch.from_numpy(aug.triples)
        super().fit(train, valid=valid, callbacks=callbacks)
        self.fit_info_.update(encoder=encoder.identity(), augmented_triples=len(aug.triples),
                              augmenter=aug.manifest.get("augmenter"))
        return self

    def _augmentation_for(self, train: Interactions, encoder):
        """The augmentation folder's triples and text, or the offline augmenter's."""
        from recsys.augment.llmrec import Augmentation, augment, item_texts

        if self.augmentation is not None:
            return Augmentation.load(self.augmentation, train.user_map, train.item_map)
        if train.item_text is None:
            raise RecsysError("llmrec needs item text (--item-text FILE, or "
                              "Interactions.with_item_text) or an augmentation folder "
                              "(--augmentation DIR)")
        texts = item_texts(train.item_text, train.item_map)
        base = _base_model(self.seed).fit(train)
        return augment(train, texts, base, augmenter="offline", encoder=encoder,
                       n_candidates=self.candidates, seed=self.seed)

    def build(self, train: Interactions, device: torch.device) -> SideFused:
        graph = super().build(train, device)
        side = SideInfo(self.user_vectors_, self.item_vectors_, self.factors)
        self.aug_triples_ = self.triples_.to(device)
        self.aug_generator_ = torch.Generator(device=device).manual_seed(self.seed)
        return SideFused(graph, side, train.n_users, self.user_side, self.item_side).to(device)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = super().loss(users, pos, neg)
        n_aug = int(round(self.aug_rate * len(users))) if len(self.aug_triples_) else 0
        if n_aug:
            pick = torch.randint(len(self.aug_triples_), (n_aug,), device=users.device,
                                 generator=self.aug_generator_)
            u, i, j = self.aug_triples_.index_select(0, pick).T
            nodes, offset = self.module_.last, self.graph_.n_users
            eu, ei, ej = nodes.index_select(0, u), nodes.index_select(0, i + offset), \
                nodes.index_select(0, j + offset)
            kept = keep_smallest(bpr_loss((eu * ei).sum(-1), (eu * ej).sum(-1)), self.prune)
            # the batch's and the kept augmented terms share one mean, logged as two parts
            total = len(users) + len(kept)
            parts["bpr"] = parts["bpr"] * (len(users) / total)
            parts["aug"] = kept.sum() / total
        if self.mae_weight > 0:
            def through_graph(x: torch.Tensor) -> torch.Tensor:
                return layer_mean(propagate(x, self.adj_, self.layers), not self.ego_in_readout)

            parts["mae"] = self.mae_weight * self.module_.side.mae_loss(
                through_graph, self.mae_rate, self.mae_alpha, self.aug_generator_)
        return parts


def _base_model(seed: int):
    """The candidate model of the built-in offline augmentation: implicit ALS (fast)."""
    from recsys.models.base import create_model

    return create_model("als", seed=seed, progress=False)

