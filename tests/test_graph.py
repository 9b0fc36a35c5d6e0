import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import create_model
from recsys.augment.graph_views import (
    CrossLayerViews,
    NoiseViews,
    SGLViews,
    edge_dropout,
    node_dropout,
    sgl_view,
    uniform_noise,
)
from recsys.data import Interactions
from recsys.data.graph import BipartiteGraph
from recsys.errors import RecsysError
from recsys.losses import distinct, first_occurrence, info_nce
from recsys.nn.graph import LightGCN, layer_mean, propagate


def interactions(pairs: list[tuple[int, int]]) -> Interactions:
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    return Interactions.from_frame(frame)


@pytest.fixture
def tiny() -> Interactions:
    # 4 users x 5 items, uneven degrees
    return interactions([(0, 0), (0, 1), (0, 3), (1, 1), (2, 1), (2, 2), (2, 4), (3, 4), (3, 0)])


def dense_adjacency(data: Interactions, weight: np.ndarray | None = None) -> torch.Tensor:
    """The brute-force reference: D^-1/2 A D^-1/2 from the dense (U+I) x (U+I) matrix."""
    rows, cols = data.coo
    r = np.zeros((data.n_users, data.n_items))
    r[rows, cols] = 1.0 if weight is None else weight
    a = np.block([[np.zeros((data.n_users,) * 2), r], [r.T, np.zeros((data.n_items,) * 2)]])
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def test_adjacency_hand_computed():
    # user 0 has items 0 and 1, user 1 has item 1: degrees u0 2, u1 1, i0 1, i1 2
    adj = BipartiteGraph(interactions([(0, 0), (0, 1), (1, 1)])).adjacency().to_dense()
    expected = torch.zeros(4, 4)
    expected[0, 2] = expected[2, 0] = 1 / math.sqrt(2)
    expected[0, 3] = expected[3, 0] = 0.5
    expected[1, 3] = expected[3, 1] = 1 / math.sqrt(2)
    assert torch.allclose(adj, expected)


def test_adjacency_matches_dense_reference_and_is_sparse(tiny):
    graph = BipartiteGraph(tiny)
    adj = graph.adjacency()
    assert adj.layout == torch.sparse_csr and adj._nnz() == 2 * tiny.nnz
    assert torch.allclose(adj.to_dense(), dense_adjacency(tiny))
    assert torch.allclose(adj.to_dense(), adj.to_dense().T)


def test_subgraph_is_renormalised_over_kept_edges(tiny):
    graph = BipartiteGraph(tiny)
    keep = np.array([1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=np.float32)  # in CSR (user) order
    adj = graph.adjacency(torch.from_numpy(keep)).to_dense()
    assert torch.allclose(adj, dense_adjacency(tiny, keep))
    # item 2's only edge (user 2) is dropped: its row and column are zero
    assert adj[tiny.n_users + 2].abs().sum() == 0 and adj[:, tiny.n_users + 2].abs().sum() == 0
    with pytest.raises(RecsysError, match="edge_weight"):
        graph.adjacency(torch.ones(3))


def test_propagation_equals_dense_powers_and_gradients(tiny):
    graph = BipartiteGraph(tiny)
    adj, dense = graph.adjacency(), dense_adjacency(tiny)
    ego = torch.randn(graph.n_nodes, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    outputs = propagate(ego, adj, 3)
    for k, out in enumerate(outputs):
        assert torch.allclose(out, torch.linalg.matrix_power(dense, k) @ ego, atol=1e-6)
    readout = layer_mean(outputs)
    ref_ego = ego.detach().clone().requires_grad_(True)
    ref = sum(torch.linalg.matrix_power(dense, k) @ ref_ego for k in range(4)) / 4
    assert torch.allclose(readout, ref, atol=1e-6)
    assert torch.allclose(layer_mean(outputs, skip_ego=True), (ref * 4 - ref_ego) / 3, atol=1e-6)
    weights = torch.randn(graph.n_nodes, 3)
    (readout * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(ego.grad, ref_ego.grad, atol=1e-6)


def test_propagation_uses_one_adjacency_per_layer(tiny):
    graph = BipartiteGraph(tiny)
    full, empty = graph.adjacency(), graph.adjacency(torch.zeros(tiny.nnz))
    ego = torch.randn(graph.n_nodes, 2)
    outputs = propagate(ego, [full, empty], 2)
    assert torch.allclose(outputs[1], full @ ego) and torch.all(outputs[2] == 0)
    with pytest.raises(ValueError, match="2 adjacencies for 3 layers"):
        propagate(ego, [full, empty], 3)


def test_lightgcn_module_readout(tiny):
    graph = BipartiteGraph(tiny)
    module = LightGCN(tiny.n_users, tiny.n_items, 4, 2)
    final, outputs = module(graph.adjacency())
    assert len(outputs) == 3 and torch.equal(outputs[0], module.ego.weight)
    assert torch.allclose(final, (outputs[0] + outputs[1] + outputs[2]) / 3)


@pytest.fixture(scope="module")
def large_graph() -> BipartiteGraph:
    rng = np.random.default_rng(0)
    pairs = np.unique(rng.integers(0, [2000, 1000], size=(60000, 2)), axis=0)
    return BipartiteGraph(interactions([tuple(p) for p in pairs]))


def test_edge_dropout_keeps_expected_fraction(large_graph):
    gen = torch.Generator().manual_seed(0)
    for rate in (0.1, 0.5):
        keep = edge_dropout(large_graph, rate, gen)
        # binomial sd at 58K edges is < 0.0021; 5 sd
        assert abs(keep.mean().item() - (1 - rate)) < 0.011
    assert not torch.equal(edge_dropout(large_graph, 0.1, gen), edge_dropout(large_graph, 0.1, gen))


def test_node_dropout_removes_all_edges_of_dropped_nodes(large_graph):
    g = large_graph
    keep = node_dropout(g, 0.2, torch.Generator().manual_seed(1)).bool()
    assert abs(keep.float().mean().item() - 0.8**2) < 0.03  # both ends kept
    # nodes with some kept edge; users have ~29 edges, so a kept user keeps some of them
    users_on = torch.zeros(g.n_users, dtype=torch.bool)
    users_on[g.users[keep]] = True
    items_on = torch.zeros(g.n_items, dtype=torch.bool)
    items_on[g.items[keep]] = True
    assert abs(1 - users_on.float().mean().item() - 0.2) < 0.03
    assert abs(1 - items_on.float().mean().item() - 0.2) < 0.04
    # per node, all or nothing: every edge between two nodes that are on is kept
    assert torch.equal(keep, users_on[g.users] & items_on[g.items])


def test_sgl_views(tiny):
    graph = BipartiteGraph(tiny)
    gen = torch.Generator().manual_seed(0)
    assert isinstance(sgl_view(graph, "ed", 0.3, 3, gen), torch.Tensor)
    walk = sgl_view(graph, "rw", 0.3, 3, gen)
    assert len(walk) == 3 and all(a.layout == torch.sparse_csr for a in walk)
    assert torch.equal(sgl_view(graph, "ed", 0.0, 3, gen).to_dense(), graph.adjacency().to_dense())
    with pytest.raises(RecsysError, match="ed, nd or rw"):
        sgl_view(graph, "xx", 0.3, 3, gen)
    views = SGLViews(graph, "ed", 0.5, 2, gen)
    module = LightGCN(tiny.n_users, tiny.n_items, 4, 2)
    ranking, v1, v2 = views.embed(module, graph.adjacency())
    assert torch.allclose(ranking, module(graph.adjacency())[0])
    assert not torch.allclose(v1, v2)
    before = [v.to_dense() for v in views.views]
    views.resample()
    assert any(not torch.equal(b, v.to_dense()) for b, v in zip(before, views.views, strict=True))
    with pytest.raises(RecsysError, match="drop rate"):
        SGLViews(graph, "ed", 1.0, 2, gen)


def test_uniform_noise_has_length_eps_in_the_embeddings_orthant():
    e = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    delta = uniform_noise(0.1, torch.Generator().manual_seed(1))(e) - e
    assert torch.allclose(delta.norm(dim=1), torch.full((50,), 0.1), atol=1e-5)
    assert torch.all(delta * torch.sign(e) >= 0)


def test_noise_and_cross_layer_views(tiny):
    graph = BipartiteGraph(tiny)
    adj, gen = graph.adjacency(), torch.Generator().manual_seed(0)
    module = LightGCN(tiny.n_users, tiny.n_items, 4, 3, skip_ego=True)
    clean = module(adj)[0]
    ranking, v1, v2 = NoiseViews(0.1, gen).embed(module, adj)
    assert torch.equal(ranking, clean) and not torch.allclose(v1, v2) and not torch.allclose(v1, clean)
    ranking, v1, v2 = CrossLayerViews(0.0, 2, 3, gen).embed(module, adj)  # eps 0: no noise
    outputs = module(adj)[1]
    assert torch.allclose(ranking, clean) and ranking is v1 and torch.allclose(v2, outputs[2])
    with pytest.raises(RecsysError, match="1..3"):
        CrossLayerViews(0.1, 4, 3, gen)


def test_first_occurrence():
    ids = torch.tensor([5, 2, 5, 7, 2, 2, 9])
    assert first_occurrence(ids).tolist() == [True, True, False, True, False, False, True]


def test_distinct_holds_each_value_once_in_a_fixed_length():
    ids = torch.tensor([5, 2, 5, 7, 2, 2, 9])
    rows, keep = distinct(ids, bound=10)
    assert len(rows) == 7 and sorted(rows[keep].tolist()) == [2, 5, 7, 9]
    assert set(rows[~keep].tolist()) <= {2, 5, 7, 9}
    rows, keep = distinct(ids, bound=4)  # 4 possible values: the result is cut to 4 rows
    assert len(rows) == 4 and keep.all() and sorted(rows.tolist()) == [2, 5, 7, 9]


def test_info_nce_hand_computed():
    # cos(a0, b1) = 0, cos(a1, b1) = 1
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[4.0, 3.0], [0.0, 1.0]])  # cos(a0, b0) = 0.8, cos(a1, b0) = 0.6
    t = 0.5
    row0 = -math.log(math.exp(0.8 / t) / (math.exp(0.8 / t) + math.exp(0.0 / t)))
    row1 = -math.log(math.exp(1.0 / t) / (math.exp(0.6 / t) + math.exp(1.0 / t)))
    assert info_nce(a, b, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_info_nce_with_keep_equals_the_loss_over_unique_rows():
    gen = torch.Generator().manual_seed(0)
    table1, table2 = torch.randn(10, 4, generator=gen), torch.randn(10, 4, generator=gen)
    ids = torch.tensor([3, 1, 3, 8, 1, 0, 3])
    unique = torch.unique(ids)
    expected = info_nce(table1[unique], table2[unique], 0.2)
    rows, keep = distinct(ids, bound=10)
    assert not keep.all()
    got = info_nce(table1[rows], table2[rows], 0.2, keep=keep)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ---- the lightgcn model and its presets -------------------------------------------------

FAST = {"factors": 8, "layers": 2, "epochs": 3, "batch_size": 512, "progress": False, "device": "cpu"}


def test_loss_parts_match_a_dense_computation(tiny):
    model = create_model("xsimgcl", **FAST, reg=0.01, ssl_weight=0.3, temperature=0.5, eps=0.0)
    model.module_ = model.build(tiny, torch.device("cpu"))
    users, pos, neg = torch.tensor([0, 2, 0]), torch.tensor([1, 4, 1]), torch.tensor([2, 0, 3])
    parts = model.loss(users, pos, neg)
    assert set(parts) == {"bpr", "reg", "ssl"}
    ego = model.module_.ego.weight.detach()
    dense = dense_adjacency(tiny)
    layers = [torch.linalg.matrix_power(dense, k) @ ego for k in range(3)]
    final = (layers[1] + layers[2]) / 2  # the xsimgcl preset leaves e^(0) out of the mean
    u, i, j = final[users], final[tiny.n_users + pos], final[tiny.n_users + neg]
    bpr = -torch.log(torch.sigmoid((u * i).sum(1) - (u * j).sum(1))).mean()
    reg = 0.01 * (ego[users].pow(2).sum() + ego[tiny.n_users + pos].pow(2).sum()
                  + ego[tiny.n_users + neg].pow(2).sum()) / 6
    # eps 0: the views are the clean readout and layer 1; users 0 and 2, items 1 and 4 (unique)
    ssl = 0.3 * (info_nce(final[[0, 2]], layers[1][[0, 2]], 0.5)
                 + info_nce(final[tiny.n_users + torch.tensor([1, 4])],
                            layers[1][tiny.n_users + torch.tensor([1, 4])], 0.5))
    for name, expected in {"bpr": bpr, "reg": reg, "ssl": ssl}.items():
        assert parts[name].item() == pytest.approx(expected.item(), rel=1e-5), name


def test_exported_factors_are_the_clean_readout(small_data):
    model = create_model("simgcl", **FAST, valid_frac=0.0).fit(small_data)
    final = model.module_(model.adj_)[0].detach()
    assert torch.allclose(model.user_factors(), final[:small_data.n_users])
    assert torch.allclose(model.item_factors(), final[small_data.n_users:])
    assert torch.allclose(model.score(np.array([3])), final[3] @ final[small_data.n_users:].T, atol=1e-6)


class ViewRecorder:
    """A training hook that keeps the SGL views' edge values seen at each epoch start."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def on_epoch_start(self, epoch):
        self.seen.append(self.model.views_.views[0].values().clone())


def test_sgl_redraws_views_every_epoch_and_logs_each_loss_part(small_data):
    model = create_model("sgl", **FAST, valid_frac=0.0, drop_rate=0.3)
    recorder = ViewRecorder(model)
    model.fit(small_data, callbacks=[recorder])
    assert len(recorder.seen) == 3
    assert not torch.equal(recorder.seen[0], recorder.seen[1])
    kept = (recorder.seen[0][:small_data.nnz] > 0).float().mean().item()
    assert abs(kept - 0.7) < 0.03
    assert all({"bpr", "reg", "ssl"} <= set(h) for h in model.history_)
    plain = create_model("lightgcn", **FAST, valid_frac=0.0).fit(small_data)
    assert "ssl" not in plain.history_[0] and "bpr" in plain.history_[0]


def test_bad_augmentation_settings_are_one_clear_error(small_data):
    with pytest.raises(RecsysError, match=r"parameter cl_layer=3: the contrasted layer must be "
                       r"in 1\.\.layers, here 1\.\.2"):
        create_model("xsimgcl", **FAST, cl_layer=3).fit(small_data)
    with pytest.raises(RecsysError, match="view"):
        create_model("sgl", **FAST, view="walk")
