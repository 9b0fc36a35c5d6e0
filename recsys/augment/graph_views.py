"""Two perturbed views of the interaction graph's embeddings, for a contrastive loss.

- SGL (Wu et al., SIGIR'21): views are subgraphs drawn once per epoch: edge dropout (ED),
  node dropout (ND), or random walk (RW: a separate edge-dropout subgraph per layer).
- SimGCL (Yu et al., SIGIR'22): no subgraphs; uniform noise added to each layer's output,
  two noisy passes as the views, the clean pass for the ranking loss.
- XSimGCL (Yu et al., TKDE'23): one noisy pass serves the ranking loss and both views (its
  final readout against one chosen layer's output).

Each augmentation gives `embed(module, adj) -> (ranking, view1, view2)`, three (N, d) node
matrices, and `resample()`, which the model calls at the start of each epoch. Random draws
use one `torch.Generator` on the embeddings' device: no host sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from recsys.data.graph import BipartiteGraph
from recsys.errors import RecsysError
from recsys.nn.graph import LightGCN

SGLView = Literal["ed", "nd", "rw"]
Views = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def edge_dropout(graph: BipartiteGraph, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Edge weights (E,): each edge kept (1) with probability 1 - rate, else dropped (0)."""
    return (torch.rand(graph.n_edges, generator=generator, device=graph.device) >= rate).float()


def node_dropout(graph: BipartiteGraph, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Edge weights (E,): each user and item dropped with probability `rate`, with all its edges."""
    kept = torch.rand(graph.n_nodes, generator=generator, device=graph.device) >= rate
    return (kept.index_select(0, graph.users) & kept.index_select(0, graph.items + graph.n_users)).float()


def sgl_view(graph: BipartiteGraph, kind: SGLView, rate: float, layers: int,
             generator: torch.Generator) -> torch.Tensor | list[torch.Tensor]:
    """One SGL view: a re-normalised subgraph adjacency (ED, ND) or one per layer (RW)."""
    if kind == "ed":
        return graph.adjacency(edge_dropout(graph, rate, generator))
    if kind == "nd":
        return graph.adjacency(node_dropout(graph, rate, generator))
    if kind == "rw":
        return [graph.adjacency(edge_dropout(graph, rate, generator)) for _ in range(layers)]
    raise RecsysError(f"sgl view must be ed, nd or rw, got {kind!r}")


def uniform_noise(eps: float, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """SimGCL's perturbation e + eps * sign(e) * normalize(U(0, 1)^d), row by row: a random
    direction in e's orthant, of length eps."""

    def perturb(e: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(e.shape, generator=generator, device=e.device, dtype=e.dtype)
        return e + eps * torch.sign(e) * F.normalize(noise, dim=-1)

    return perturb


class Augmentation(Protocol):
    def resample(self) -> None: ...

    def embed(self, module: LightGCN, adj: torch.Tensor) -> Views: ...


class SGLViews:
    """Two subgraph views redrawn by `resample` (once per epoch, as in the official code)."""

    def __init__(self, graph: BipartiteGraph, kind: SGLView, rate: float, layers: int,
                 generator: torch.Generator) -> None:
        if not 0 <= rate < 1:
            raise RecsysError(f"sgl: drop rate must be in [0, 1), got {rate}")
        self.graph, self.kind, self.rate, self.layers, self.generator = graph, kind, rate, layers, generator
        self.views: tuple = ()

    def resample(self) -> None:
        self.views = tuple(sgl_view(self.graph, self.kind, self.rate, self.layers, self.generator)
                           for _ in range(2))

    def embed(self, module: LightGCN, adj: torch.Tensor) -> Views:
        if not self.views:
            self.resample()
        return module(adj)[0], module(self.views[0])[0], module(self.views[1])[0]


class NoiseViews:
    """SimGCL: the clean pass for ranking, two noisy passes as the views."""

    def __init__(self, eps: float, generator: torch.Generator) -> None:
        self.perturb = uniform_noise(eps, generator)

    def resample(self) -> None:
        pass

    def embed(self, module: LightGCN, adj: torch.Tensor) -> Views:
        return module(adj)[0], module(adj, self.perturb)[0], module(adj, self.perturb)[0]


class CrossLayerViews:
    """XSimGCL: one noisy pass; its readout ranks and is contrasted with layer `layer`'s output."""

    def __init__(self, eps: float, layer: int, layers: int, generator: torch.Generator) -> None:
        if not 1 <= layer <= layers:
            raise RecsysError(f"model 'xsimgcl': parameter cl_layer={layer}: the contrasted layer "
                              f"must be in 1..layers, here 1..{layers}")
        self.perturb, self.layer = uniform_noise(eps, generator), layer

    def resample(self) -> None:
        pass

    def embed(self, module: LightGCN, adj: torch.Tensor) -> Views:
        final, outputs = module(adj, self.perturb)
        return final, final, outputs[self.layer]
