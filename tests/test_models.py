import numpy as np
import pytest
import torch

from recsys import create_model, load_model, model_names
from recsys.data import random_split
from recsys.data.sampling import PairSampler
from recsys.errors import RecsysError

FAST = {
    "pop": {},
    "als": {"factors": 16, "iterations": 5, "progress": False},
    "bpr": {"factors": 16, "progress": False},
    "mf": {"factors": 16, "epochs": 15, "progress": False, "device": "cpu"},
}


@pytest.fixture(scope="module")
def split_data(small_data):
    return random_split(small_data, test_frac=0.2, seed=0)


@pytest.fixture(scope="module")
def fitted(split_data):
    return {name: create_model(name, **params).fit(split_data.train) for name, params in FAST.items()}


def test_registry_lists_the_baselines():
    assert {"pop", "als", "bpr", "mf"} <= set(model_names())
    with pytest.raises(RecsysError, match="unknown model 'nope'; known models: .*mf"):
        create_model("nope")
    with pytest.raises(RecsysError, match="no parameter.*colour"):
        create_model("mf", colour=3)


def test_no_pickle_in_saved_model(fitted, tmp_path):
    fitted["mf"].save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "extras.json", "items.json", "users.json", "weights.safetensors"]


def test_pop_scores_are_user_counts(fitted, split_data):
    scores = fitted["pop"].score(np.array([0, 1]))
    assert torch.equal(scores[0], torch.tensor(split_data.train.item_popularity, dtype=torch.float32))


def test_recommend_excludes_training_items_and_respects_candidates(fitted, split_data):
    train = split_data.train
    users = np.arange(20)
    items, scores = fitted["mf"].recommend(users, 10, exclude=train)
    assert items.shape == (20, 10) and np.all(np.diff(scores, axis=1) <= 0)
    for u in users:
        assert not set(items[u]) & set(train.matrix[u].indices)
    cands = np.array([3, 7, 11])
    items, _ = fitted["mf"].recommend(users, 2, items=cands)
    assert set(items.ravel()) <= set(cands.tolist())
    with pytest.raises(RecsysError, match="k must be positive"):
        fitted["mf"].recommend(users, 0)


def test_mf_early_stopping_records_the_best_epoch(split_data):
    model = create_model("mf", factors=8, epochs=30, patience=2, progress=False, lr=0.05,
                         device="cpu").fit(split_data.train)
    info = model.fit_info_
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= 30
    assert info["epochs_run"] - info["best_epoch"] <= 2 or info["epochs_run"] == 30


def test_mf_callbacks_receive_each_epoch(split_data):
    seen = []

    class Recorder:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, logs))

    create_model("mf", factors=8, epochs=3, valid_frac=0.0, progress=False).fit(
        split_data.train, callbacks=[Recorder()])
    assert [e for e, _ in seen] == [1, 2, 3] and all("loss" in logs for _, logs in seen)


def test_pair_sampler_covers_positives_and_avoids_them_as_negatives(small_data):
    # users with at most 30% of the catalogue: a negative survives 4 draws with p <= 0.3^4
    sparse = small_data.subset(users=np.flatnonzero(small_data.user_degree <= 0.3 * small_data.n_items))
    sampler = PairSampler(sparse, 512, seed=0)
    users, pos, neg = (torch.cat(t) for t in zip(*sampler, strict=True))
    assert len(users) == sparse.nnz
    keys = set((users * sparse.n_items + pos).tolist())
    assert len(keys) == sparse.nnz  # every positive exactly once
    assert sampler.is_positive(users, pos).all()
    assert sampler.is_positive(users, neg).float().mean() < 0.3**4 + 0.005


def test_pair_sampler_membership_bitset_and_binary_search_agree(small_data, monkeypatch):
    from recsys.data import sampling

    gen = torch.Generator().manual_seed(0)
    users = torch.randint(small_data.n_users, (5000,), generator=gen)
    items = torch.randint(small_data.n_items, (5000,), generator=gen)
    dense = torch.from_numpy(small_data.matrix.toarray() != 0)
    expected = dense[users, items]
    assert expected.any() and not expected.all()
    bitset = PairSampler(small_data, 64).is_positive(users, items)
    monkeypatch.setattr(sampling, "BITSET_CELLS", 0)
    searched = PairSampler(small_data, 64)
    assert torch.equal(searched.is_positive(users, items), expected)
    assert searched.membership.dtype == torch.int64 and torch.equal(bitset, expected)


@pytest.mark.parametrize("loss", ["bpr", "bce", "wmf", "relmf", "ubpr"])
def test_mf_trains_with_every_loss(loss, split_data):
    model = create_model("mf", loss=loss, factors=8, epochs=3, valid_frac=0.0, progress=False,
                         device="cpu").fit(split_data.train)
    scores = model.score(np.arange(5))
    assert torch.isfinite(scores).all() and scores.std() > 0


@pytest.mark.parametrize("loss", ["bce", "relmf"])
def test_all_pairs_weighs_each_half_of_a_batch_by_its_share_of_the_cells(loss, split_data):
    """The batch loss estimates the mean over every cell: clicked pairs weigh nnz / cells,
    unobserved ones the rest; without all_pairs both halves weigh alike."""
    import torch.nn.functional as F

    train = split_data.train
    share = train.nnz / (train.n_users * train.n_items)
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    nu, ni = torch.tensor([6, 7, 8]), torch.tensor([9, 10, 11])
    per_batch = {}
    for all_pairs in (False, True):
        model = create_model("mf", loss=loss, all_pairs=all_pairs, reg=0.0, factors=4, epochs=1,
                             valid_frac=0.0, clip=1.0, beta=None, per_pair="log", progress=False,
                             device="cpu").fit(train)
        u, i = model.module_.users.weight, model.module_.items.weight
        clicked, unobserved = (u[users] * i[pos]).sum(1), (u[nu] * i[ni]).sum(1)
        # clip 1.0 floors every propensity at 1: Rel-MF's click weight Y/theta is 1, as in bce
        d1, d0 = -F.logsigmoid(clicked), -F.logsigmoid(-unobserved)
        weights = (2 * share, 2 * (1 - share)) if all_pairs else (1.0, 1.0)
        expected = (weights[0] * d1.sum() + weights[1] * d0.sum()) / 6
        per_batch[all_pairs] = model._batch_loss(users, pos, nu, ni)
        assert per_batch[all_pairs].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss", ["bpr", "bce"])
def test_item_bias_is_added_to_each_score_and_exported_as_a_factor_column(loss, split_data,
                                                                          tmp_path):
    """score(u, i) = u.v_i + b_i in the batch loss, in the exported factors (a user column of
    ones against a bias column) and after a save/load round trip."""
    import torch.nn.functional as F

    from recsys.models.persist import save_model

    train = split_data.train
    model = create_model("mf", loss=loss, item_bias=True, reg=0.0, factors=4, epochs=2,
                         valid_frac=0.0, progress=False, device="cpu").fit(train)
    u, i, b = (model.module_.users.weight, model.module_.items.weight,
               model.module_.item_bias)
    assert b.abs().sum() > 0  # trained away from its zero start
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([9, 10, 11])
    s_pos = (u[users] * i[pos]).sum(1) + b[pos]
    s_neg = (u[users] * i[neg]).sum(1) + b[neg]
    if loss == "bpr":
        expected = -F.logsigmoid(s_pos - s_neg).mean()
    else:
        expected = (-F.logsigmoid(s_pos).sum() - F.logsigmoid(-s_neg).sum()) / 6
    got = (model._batch_loss(users, pos, neg) if loss == "bpr"
           else model._batch_loss(users, pos, users, neg))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    dense = (u @ i.T + b).detach()
    assert torch.allclose(model.score(np.arange(train.n_users)), dense, atol=1e-5)
    assert model.fixed_user_columns == 1 and torch.all(model.user_factors()[:, -1] == 1)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.fixed_user_columns == 1
    assert torch.allclose(loaded.score(np.arange(train.n_users)), dense, atol=1e-5)


def test_item_bias_learns_item_popularity():
    """With one factor and a strong penalty on it, BPR's item bias carries the ranking that
    item popularity gives: the biases order items as their click counts do."""
    import scipy.sparse as sp
    from scipy.stats import spearmanr

    from recsys import Interactions
    from recsys.data import IdMap

    rng = np.random.default_rng(0)
    n_users, n_items = 300, 40
    clicks_per_item = np.linspace(5, 200, n_items).astype(int)
    rows = np.concatenate([rng.choice(n_users, c, replace=False) for c in clicks_per_item])
    cols = np.repeat(np.arange(n_items), clicks_per_item)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                           shape=(n_users, n_items))
    train = Interactions(matrix, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))
    model = create_model("mf", item_bias=True, factors=1, reg=1.0, epochs=30, lr=0.05,
                         valid_frac=0.0, progress=False, device="cpu").fit(train)
    rho = spearmanr(model.module_.item_bias.detach().numpy(), train.item_popularity).statistic
    assert rho > 0.9


def test_unbiased_presets_compute_or_take_propensities(split_data, tmp_path):
    from recsys.data.propensity import item_propensity

    model = create_model("relmf", factors=8, epochs=2, valid_frac=0.0, progress=False)
    assert model.loss == "relmf" and model.clip > 0
    model.fit(split_data.train)
    assert "item popularity" in model.fit_info_["propensity"]
    given = item_propensity(np.ones(split_data.train.n_items), eta=1.0)
    given = type(given)(item=given.item, rule="uniform exposure")
    model = create_model("ubpr", factors=8, epochs=2, valid_frac=0.0, progress=False)
    model.fit(split_data.train.with_propensity(given))
    assert model.fit_info_["propensity"].startswith("uniform exposure")
    model.save(tmp_path / "u")
    loaded = load_model(tmp_path / "u")
    assert loaded.loss == "ubpr" and loaded.beta == model.beta
    with pytest.raises(RecsysError, match="parameter loss='hinge': input should be 'bpr'"):
        create_model("mf", loss="hinge")
