"""Dynamic sparse training (density < 1): the mask update, the budget held through training,
optimiser moments, sparse model folders and parameter checks."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from recsys import create_model, load_model
from recsys.errors import RecsysError
from recsys.models.persist import pack_sparse, unpack_sparse
from recsys.sparsity import DynamicSparsity, prune_and_regrow, update_ratio
from recsys.train import Optim, StepFunctions, train_loop


def test_prune_and_regrow_matches_a_brute_force_reference():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 5, generator=gen)
    grad = torch.randn(6, 5, generator=gen)
    mask = (torch.rand(6, 5, generator=gen) < 0.4).float()
    weight *= mask
    before_w, before_m = weight.clone(), mask.clone()
    prune_and_regrow(weight, mask, grad, 3)
    # reference: the 3 kept weights of smallest |w| leave, then the 3 largest |grad| outside
    w, m, g = before_w.view(-1).numpy(), before_m.view(-1).numpy(), grad.view(-1).numpy()
    kept = np.flatnonzero(m)
    dropped = kept[np.argsort(np.abs(w[kept]))[:3]]
    outside = np.flatnonzero(m == 0).tolist() + dropped.tolist()
    added = sorted(outside, key=lambda i: -abs(g[i]))[:3]
    expected = m.copy()
    expected[dropped] = 0
    expected[added] = 1
    assert mask.view(-1).numpy().tolist() == expected.tolist()
    assert mask.sum() == before_m.sum()
    expected_w = w.copy()
    expected_w[dropped] = 0
    assert weight.view(-1).numpy().tolist() == expected_w.tolist()  # added ones start at zero
    assert (weight[mask == 0] == 0).all()


def test_update_ratio_anneals_by_a_cosine_to_its_floor():
    assert update_ratio(0, 100, 0.5) == pytest.approx(0.5)
    assert update_ratio(50, 100, 0.5) == pytest.approx((0.5 + 0.005) / 2)
    assert update_ratio(25, 100, 0.5) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    assert update_ratio(100, 100, 0.5) == pytest.approx(0.005)
    assert update_ratio(400, 100, 0.5) == pytest.approx(0.005)
    assert update_ratio(50, 100, 0.001) == pytest.approx(0.001)  # a ratio below the floor stays


class Checker:
    """After every step (after the sparsity hook): each table's mask holds exactly its budget,
    weights and Adam moments outside it are zero, and the masks change only at update steps."""

    def __init__(self, model):
        self.model, self.counts, self.changes = model, [], []

    def on_optimizer(self, optimizer):
        self.optimizer, self.masks = optimizer, None

    def after_step(self, step):
        sparsity = self.model.sparsity_
        counts = []
        for table, mask, budget in zip(sparsity.tables, sparsity.masks, sparsity.budgets,
                                       strict=True):
            assert int(mask.sum()) == budget == round(self.model.density * table.numel())
            off = mask == 0
            assert (table.detach()[off] == 0).all()
            state = self.optimizer.state[table]
            assert (state["exp_avg"][off] == 0).all() and (state["exp_avg_sq"][off] == 0).all()
            counts.append((int(torch.count_nonzero(table)), budget))
        masks = [m.clone() for m in sparsity.masks]
        if self.masks is not None:
            changed = any(not torch.equal(a, b) for a, b in zip(masks, self.masks, strict=True))
            self.changes.append((step, changed))
        self.masks = masks
        self.counts.append((step, counts))


@pytest.mark.parametrize("name, params", [
    ("mf", {"factors": 8, "batch_size": 100_000, "lr": 0.05}),  # one batch: all pairs
    ("lightgcn", {"factors": 8, "layers": 2, "batch_size": 100_000, "lr": 0.05}),
])
def test_density_is_held_through_training(name, params, small_data):
    every = 4
    model = create_model(name, density=0.3, prune_every=every, epochs=12, valid_frac=0.0,
                         progress=False, **params)
    checker = Checker(model)
    model.fit(small_data, callbacks=[checker])
    assert len(checker.counts) == 12 and model.sparsity_.updates == 3
    # masks move at the update steps (every 4, offset by 2) and nowhere else
    assert [s for s, changed in checker.changes if changed] == [2, 6, 10]
    for step, counts in checker.counts:
        for nonzero, budget in counts:
            if step % every != 2:  # every weight on the mask had a gradient: exactly the budget
                assert nonzero == budget
            else:  # just regrown weights start from zero
                assert nonzero <= budget
    users, items = model.user_factors_, model.item_factors_
    if name == "mf":  # the exported factors are the tables
        assert int(torch.count_nonzero(users)) <= round(0.3 * users.numel())
        assert int(torch.count_nonzero(items)) <= round(0.3 * items.numel())


def test_density_one_trains_exactly_as_before(small_data):
    params = {"factors": 8, "epochs": 3, "progress": False}
    dense = create_model("mf", **params).fit(small_data)
    same = create_model("mf", density=1.0, **params).fit(small_data)
    assert same.sparsity_ is None
    assert torch.equal(dense.user_factors_, same.user_factors_)
    assert torch.equal(dense.item_factors_, same.item_factors_)
    assert bool((dense.user_factors_ != 0).all())


def test_sparse_folder_is_smaller_and_round_trips(small_data, tmp_path):
    params = {"factors": 16, "epochs": 3, "progress": False, "prune_every": 20}
    dense = create_model("mf", **params).fit(small_data)
    sparse = create_model("mf", density=0.2, **params).fit(small_data)
    dense.save(tmp_path / "dense")
    sparse.save(tmp_path / "sparse")
    size = {k: (tmp_path / k / "weights.safetensors").stat().st_size for k in ("dense", "sparse")}
    # 20% of the entries at 4 + 2 bytes each, plus row pointers, against 4 bytes each
    assert size["sparse"] < 0.4 * size["dense"]
    with safe_open(str(tmp_path / "sparse" / "weights.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["sparse"]) == {
            "user_factors": [small_data.n_users, 16], "item_factors": [small_data.n_items, 16]}
        assert fh.get_tensor("item_factors.col_indices").dtype == torch.int16
    with safe_open(str(tmp_path / "dense" / "weights.safetensors"), framework="pt") as fh:
        assert sorted(fh.keys()) == ["item_factors", "user_factors"]
    loaded = load_model(tmp_path / "sparse")
    assert torch.equal(loaded.user_factors_, sparse.user_factors_)
    assert torch.equal(loaded.item_factors_, sparse.item_factors_)
    assert all(t.is_sparse for t in loaded.factor_tables())  # held as CSR: 20% < about 50%
    users = np.arange(small_data.n_users)
    (items, scores), (items_ref, scores_ref) = (
        m.recommend(users, 10, exclude=small_data) for m in (loaded, sparse))
    assert np.array_equal(items, items_ref)  # the CSR product sums in another order than BLAS
    assert np.allclose(scores, scores_ref, rtol=1e-5, atol=1e-7)


def test_pack_sparse_round_trips_and_keeps_dense_tensors_dense():
    sparse = torch.zeros(4, 6)
    sparse[0, 1], sparse[2, 5], sparse[2, 0], sparse[3, 3] = 1.5, -2.0, 3.0, 0.25
    dense = torch.arange(1.0, 13.0).view(3, 4)
    tensors, shapes = pack_sparse({"s": sparse, "d": dense, "v": torch.zeros(5)})
    assert shapes == {"s": [4, 6]}
    assert tensors["s.crow_indices"].tolist() == [0, 1, 1, 3, 4]
    assert tensors["s.col_indices"].tolist() == [1, 0, 5, 3]
    assert tensors["s.values"].tolist() == [1.5, 3.0, -2.0, 0.25]
    assert tensors["d"] is dense and "s" not in tensors
    state = unpack_sparse(tensors, shapes, "w")
    assert torch.equal(state["s"], sparse) and torch.equal(state["d"], dense)
    kept = unpack_sparse(tensors, shapes, "w", keep=frozenset({"s", "d"}))
    assert kept["s"].format == "csr" and kept["s"].indices.dtype == np.int32
    assert np.array_equal(kept["s"].toarray(), sparse.numpy()) and torch.equal(kept["d"], dense)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("s.values"), "lacks s.values"),
    (lambda t: t.__setitem__("s.col_indices", torch.tensor([1, 0, 6, 3], dtype=torch.int16)),
     "do not form a CSR matrix of shape 4 x 6"),
    (lambda t: t.__setitem__("s.crow_indices", torch.tensor([0, 2, 1, 3, 4], dtype=torch.int32)),
     "do not form a CSR matrix"),
])
def test_damaged_sparse_tensor_is_a_clear_error(change, message):
    sparse = torch.zeros(4, 6)
    sparse[0, 1], sparse[2, 5], sparse[2, 0], sparse[3, 3] = 1.5, -2.0, 3.0, 0.25
    tensors, shapes = pack_sparse({"s": sparse})
    change(tensors)
    with pytest.raises(RecsysError, match=f"weights.safetensors: sparse tensor 's'.*{message}"):
        unpack_sparse(tensors, shapes, "weights.safetensors")


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "nan", "dense"])
@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_density_outside_0_1_is_refused(name, value):
    with pytest.raises(RecsysError, match=f"model '{name}': parameter density="):
        create_model(name, density=value)


def test_the_hook_reaches_the_optimiser_before_training_starts():
    table = torch.nn.Parameter(torch.randn(10, 4))
    calls = []

    class Recorder:
        def on_optimizer(self, optimizer):
            calls.append(type(optimizer).__name__)

        def on_train_start(self):
            calls.append("start")

    sparsity = DynamicSparsity([table], 0.5, every=2, ratio=0.5, total=4)
    step = StepFunctions(lambda epoch: [()] * 2, lambda: (table ** 2).sum())
    train_loop(table_module(table), step, epochs=2, optim=Optim(lr=0.1),
               hooks=[sparsity, Recorder()], progress=False)
    assert calls == ["Adam", "start"]
    assert sparsity.updates == 2 and int(sparsity.masks[0].sum()) == 20
    with pytest.raises(RecsysError, match=r"density must be in \(0, 1\]"):
        DynamicSparsity([table], 0.0, every=2, ratio=0.5, total=4)


def table_module(table):
    module = torch.nn.Module()
    module.table = table
    return module


def test_masks_move_every_three_epochs_by_default(small_data):
    model = create_model("mf", factors=4, density=0.5, epochs=7, batch_size=2048, valid_frac=0.0,
                         progress=False).fit(small_data)
    steps = len(model.sampler_)  # per epoch
    # in the middle of epochs 2 and 5
    assert model.sparsity_.every == 3 * steps and model.sparsity_.updates == 2


def test_a_density_leaving_fewer_weights_than_rows_is_warned_about(caplog):
    small = torch.nn.Parameter(torch.ones(50, 4))  # 200 weights: 0.2 keeps 40 < 50 rows
    large = torch.nn.Parameter(torch.ones(10, 4))  # 40 weights: 0.2 keeps 8 < 10 rows
    with caplog.at_level("WARNING", logger="recsys"):
        DynamicSparsity([small, large], 0.2, every=10, ratio=0.5, total=100)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "keeps 40 weights of a table of 50 rows" in messages[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="recsys"):
        DynamicSparsity([small], 0.25, every=10, ratio=0.5, total=100)  # 50 weights, 50 rows
    assert not caplog.records
