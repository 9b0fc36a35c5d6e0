"""LightGCN and its graph-augmented presets SGL, SimGCL and XSimGCL, on the training template.

One model: LightGCN propagation (`recsys.nn.graph`) over the normalised user-item graph
(`recsys.data.graph`), BPR with L2 on the batch's ego embeddings, and optionally a contrastive
loss between two perturbed views (`recsys.augment.graph_views`). After training the readout
of the clean graph is exported as user and item factors, so scoring, evaluation, batch jobs,
the pyfunc model, serving and fold-in treat it like any factor model (and do not need the
graph, or torch-geometric, to load it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from recsys.augment.graph_views import (
    Augmentation,
    CrossLayerViews,
    NoiseViews,
    SGLView,
    SGLViews,
)
from recsys.data.graph import BipartiteGraph
from recsys.data.interactions import Interactions
from recsys.data.sampling import PairSampler
from recsys.losses import bpr_loss, distinct, info_nce
from recsys.models.base import register, register_preset
from recsys.models.params import Fraction, NonNegative, Positive
from recsys.models.space import Float, Int
from recsys.models.sparse import SparseTables
from recsys.models.torch_model import TorchRecommender
from recsys.nn.graph import LightGCN

Augment = Literal["none", "sgl", "simgcl", "xsimgcl"]


@register("lightgcn")
@dataclass(eq=False, repr=False, kw_only=True)
class LightGCNRecommender(SparseTables, TorchRecommender):
    """LightGCN (He et al., SIGIR'20): `layers` rounds of propagation e <- D^-1/2 A D^-1/2 e
    over the user-item graph, the mean of the layers as the embedding, dot-product scores;
    BPR loss plus `reg` * ||batch ego embeddings||^2 / 2 per pair.

    `augment` adds `ssl_weight` * InfoNCE (temperature `temperature`) between two views over
    the batch's unique users and items (presets sgl, simgcl, xsimgcl):
    - `sgl` (Wu et al., SIGIR'21): subgraph views redrawn every epoch, `view` ed (edge
      dropout), nd (node dropout) or rw (an edge-dropout subgraph per layer), `drop_rate`;
    - `simgcl` (Yu et al., SIGIR'22): uniform noise of length `eps` added to every layer's
      output, two noisy passes as views, the clean pass for BPR;
    - `xsimgcl` (Yu et al., TKDE'23): one noisy pass for BPR, its readout contrasted with
      the output of layer `cl_layer`.
    `ego_in_readout=False` leaves layer 0 out of the mean (as SimGCL and XSimGCL do).
    The loss parts bpr, reg and ssl are logged apart. `density` < 1 trains the ego table
    sparse (dynamic sparse learning, `SparseTables`, as the DSL paper does for LightGCN); the
    exported readout mixes every node's neighbourhood and is dense.
    """

    factors: Positive[int] = 64
    layers: Positive[int] = 3
    reg: NonNegative[float] = 1e-4
    init_std: Positive[float] = 0.1
    ego_in_readout: bool = True
    augment: Augment = "none"
    view: SGLView = "ed"
    drop_rate: Fraction = 0.1
    ssl_weight: NonNegative[float] = 0.02
    temperature: Positive[float] = 0.2
    eps: NonNegative[float] = 0.1
    cl_layer: Positive[int] = 1
    # time to quality: few large steps (propagation over the whole graph costs the same for
    # any batch size) at a higher learning rate than the official 1e-3 (bench/RESULTS.md)
    batch_size: NonNegative[int] = 8192
    lr: Positive[float] = 0.01

    test_params: ClassVar[dict] = {"factors": 16, "layers": 2, "epochs": 10, "batch_size": 1024}
    # what `recsys tune` searches (the contrastive settings only for the presets using them)
    search_space: ClassVar[dict] = {
        "factors": Int(16, 256, log=True), "lr": Float(1e-3, 3e-2, log=True),
        "reg": Float(1e-6, 1e-2, log=True), "layers": Int(1, 4),
        "ssl_weight": Float(1e-3, 0.5, log=True, when={"augment": ("sgl", "simgcl", "xsimgcl")}),
        "temperature": Float(0.05, 1.0, log=True, when={"augment": ("sgl", "simgcl", "xsimgcl")}),
        "drop_rate": Float(0.05, 0.5, when={"augment": ("sgl",)}),
        "eps": Float(0.01, 0.5, log=True, when={"augment": ("simgcl", "xsimgcl")}),
    }

    def build(self, train: Interactions, device: torch.device) -> LightGCN:
        self.graph_ = BipartiteGraph(train, device)
        self.adj_ = self.graph_.adjacency()
        self.sampler_ = PairSampler(train, self.batch_size or train.nnz, seed=self.seed, device=device)
        self.views_ = self._augmentation(torch.Generator(device=device).manual_seed(self.seed))
        return LightGCN(train.n_users, train.n_items, self.factors, self.layers,
                        init_std=self.init_std, skip_ego=not self.ego_in_readout).to(device)

    def _augmentation(self, generator: torch.Generator) -> Augmentation | None:
        if self.augment == "sgl":
            return SGLViews(self.graph_, self.view, self.drop_rate, self.layers, generator)
        if self.augment == "simgcl":
            return NoiseViews(self.eps, generator)
        if self.augment == "xsimgcl":
            return CrossLayerViews(self.eps, self.cl_layer, self.layers, generator)
        return None

    def on_epoch_start(self, epoch: int) -> None:
        if self.views_ is not None:
            self.views_.resample()  # SGL: two fresh subgraphs per epoch

    def batches(self, epoch: int) -> PairSampler:
        return self.sampler_

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        module, n_users = self.module_, self.graph_.n_users
        pos, neg = pos + n_users, neg + n_users  # item rows among the nodes
        if self.views_ is None:
            final, view1, view2 = module(self.adj_)[0], None, None
        else:
            final, view1, view2 = self.views_.embed(module, self.adj_)
        u, i, j = (final.index_select(0, ids) for ids in (users, pos, neg))
        ego = [module.ego.weight.index_select(0, ids) for ids in (users, pos, neg)]
        parts = {"bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1)).mean(),
                 "reg": self.reg * sum(e.pow(2).sum() for e in ego) / (2 * len(users))}
        if view1 is not None:
            # InfoNCE over the batch's unique users and unique clicked items
            ssl = 0.0
            for ids, bound in ((users, n_users), (pos, self.graph_.n_items)):
                rows, keep = distinct(ids, bound)
                ssl = ssl + info_nce(view1.index_select(0, rows), view2.index_select(0, rows),
                                     self.temperature, keep)
            parts["ssl"] = self.ssl_weight * ssl
        return parts

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.graph_.split(self.module_(self.adj_)[0])


# Settings from papers.md section 6 (SGL README, SELFRec leaderboard), except the contrastive
# weight: at the official 0.1-0.5 the contrastive term swamps BPR in the first epochs at this
# learning rate and batch size (BPR stays at log 2 and early stopping picks a near-random
# epoch), so the weight was chosen on a MovieLens-100K validation split (bench/RESULTS.md);
# sgl's weight and temperature are RecBole-GNN's best on ML-1M. With a contrastive term the
# validation curve has an early transient peak (before BPR takes off, about epoch 8 there)
# and passes it again about 12 epochs later: the first 20 epochs cannot be chosen (`warmup`).
# SimGCL and XSimGCL leave the ego embeddings out of the layer mean, as the official code does.
CONTRASTIVE = {"warmup": 20}
register_preset("sgl", "lightgcn", augment="sgl", view="ed", drop_rate=0.1, ssl_weight=0.005,
                temperature=0.5, **CONTRASTIVE)
register_preset("simgcl", "lightgcn", augment="simgcl", eps=0.1, ssl_weight=0.02, temperature=0.2,
                ego_in_readout=False, **CONTRASTIVE)
register_preset("xsimgcl", "lightgcn", augment="xsimgcl", eps=0.2, ssl_weight=0.02,
                temperature=0.15, cl_layer=1, ego_in_readout=False, **CONTRASTIVE)
