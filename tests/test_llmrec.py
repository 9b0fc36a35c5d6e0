import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recsys import Interactions, create_model
from recsys.augment.llmrec import Augmentation
from recsys.errors import RecsysError
from recsys.models.llmrec_parts import SideInfo, keep_smallest, sce_loss


def test_keep_smallest_drops_the_largest_loss_fraction():
    losses = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert sorted(keep_smallest(losses, 0.4).tolist()) == [1.0, 2.0, 3.0]  # ceil(0.6 * 5) = 3
    assert sorted(keep_smallest(losses, 0.0).tolist()) == sorted(losses.tolist())
    assert keep_smallest(losses, 0.99).tolist() == [1.0]
    assert len(keep_smallest(torch.zeros(0), 0.5)) == 0


def test_sce_loss_closed_forms():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert sce_loss(x, x).item() == 0.0
    assert sce_loss(-x, x).item() == 4.0                       # (1 - (-1))^2
    assert sce_loss(x.flip(1), x, alpha=3.0).item() == 1.0     # orthogonal rows: (1 - 0)^3


def side(seed=0):
    g = torch.Generator().manual_seed(seed)
    return SideInfo(torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g), dim=4)


def test_fuse_adds_unit_side_vectors_scaled_by_their_weight():
    s, users, items = side(), torch.zeros(5, 4), torch.ones(7, 4)
    u, i = s.fuse(users, items, 0.5, 0.0)
    torch.testing.assert_close(u.norm(dim=1), torch.full((5,), 0.5))
    assert torch.equal(i, items)


def test_mae_masks_a_copy_and_trains_projection_and_decoder():
    s = side()
    stored = s.user_x.clone(), s.item_x.clone()
    loss = s.mae_loss(lambda nodes: nodes, rate=0.4, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss.item() <= 8  # two SCE terms, each at most 2^2
    assert torch.equal(s.user_x, stored[0]) and torch.equal(s.item_x, stored[1])
    for layer in (s.user_proj, s.item_proj, s.user_dec, s.item_dec):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 users x 6 items, and an augmentation folder with three hand-made triples."""
    d = tmp_path_factory.mktemp("llmrec")
    rows = [(u, i) for u in range(8) for i in range(6) if (u + i) % 3 == 0]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    triples = np.array([[0, 1, 2], [1, 0, 4], [2, 2, 3]])
    Augmentation(triples, np.array([f"film {i} drama" for i in range(6)], dtype=object),
                 np.array([f"likes drama {u}" for u in range(8)], dtype=object),
                 {"augmenter": "offline"}).save(d / "aug", train.user_map, train.item_map)
    return train, d


def fit_tiny(tiny, **params):
    train, d = tiny
    settings = {"augmentation": str(d / "aug"), "factors": 8, "layers": 2, "epochs": 2,
                "batch_size": 16, "valid_frac": 0.0, "progress": False, "device": "cpu", **params}
    return create_model("llmrec", **settings).fit(train)


def test_augmented_terms_join_the_batch_mean_after_pruning(tiny, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tiny[1] / "cache"))
    model = fit_tiny(tiny, aug_rate=0.5, prune=0.5)
    users, pos, neg = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 1, 0]), torch.tensor([1, 1, 0, 2])
    state = model.aug_generator_.get_state()
    parts = model.loss(users, pos, neg)
    model.aug_generator_.set_state(state)
    pick = torch.randint(3, (2,), generator=model.aug_generator_)  # round(0.5 * 4) = 2 triples
    nodes, n_users = model.module_.last.detach(), 8

    def terms(u, i, j):
        eu = nodes[u]
        return -F.logsigmoid((eu * nodes[i + n_users]).sum(-1) - (eu * nodes[j + n_users]).sum(-1))

    batch = terms(users, pos, neg)
    aug = terms(*model.aug_triples_[pick].T)
    kept = aug.min()  # prune 0.5 of 2 terms: the smaller one stays
    assert torch.allclose(parts["bpr"].detach(), batch.sum() / 5)
    assert torch.allclose(parts["aug"].detach(), kept / 5)
    assert "mae" not in parts


def test_no_triples_and_mae_parts(tiny, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tiny[1] / "cache"))
    model = fit_tiny(tiny, aug_rate=0.0, mae_weight=0.5, user_side=0.1, item_side=0.3)
    assert {"bpr", "reg", "mae"} <= set(model.history_[-1]) and "aug" not in model.history_[-1]
    assert model.fit_info_["encoder"]["name"] == "all-MiniLM-L6-v2"
    # the exported factors are the graph readout plus side vectors of length user_side/item_side
    with torch.no_grad():
        readout = model.module_.graph(model.adj_)[0]
    for factors, graph_part, weight in ((model.user_factors(), readout[:8], 0.1),
                                        (model.item_factors(), readout[8:], 0.3)):
        torch.testing.assert_close((factors - graph_part).norm(dim=1), torch.full((len(factors),), weight))


def test_llmrec_needs_text_and_no_graph_views(tiny):
    train, _ = tiny
    with pytest.raises(RecsysError, match="llmrec needs item text"):
        create_model("llmrec", progress=False).fit(train)
    with pytest.raises(RecsysError, match="augment must be none"):
        create_model("llmrec", augment="sgl", progress=False).fit(train)
