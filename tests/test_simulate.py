import numpy as np
import pytest
import torch

from recsys.data.propensity import Propensity, item_propensity
from recsys.data.simulate import simulate
from recsys.errors import RecsysError


@pytest.fixture(scope="module")
def sim():
    return simulate(n_users=1500, n_items=2000, n_interactions=30000, popularity_bias=1.0, seed=1)


def test_sizes_follow_the_request_and_maps_are_shared(sim):
    assert 0.8 * 30000 < sim.train.nnz < 1.2 * 30000
    assert sim.test.user_map == sim.train.user_map and sim.test.item_map == sim.train.item_map
    rows, cols = sim.test.coo
    assert sim.train.matrix[rows, cols].sum() == 0  # test clicks are new to training
    assert set(np.unique(sim.train.levels.data)) <= {1, 2, 3}
    assert len(sim.item_features) == len(sim.item_text) == 2000


def test_deterministic_by_seed():
    a, b, c = (simulate(300, 100, 3000, seed=s) for s in (5, 5, 6))
    assert (a.train.matrix != b.train.matrix).nnz == 0
    assert np.array_equal(a.unbiased_test.labels, b.unbiased_test.labels)
    assert (a.train.matrix != c.train.matrix).nnz > 0


def test_clicks_are_relevant_and_exposure_is_biased_to_popular_items(sim):
    rows, cols = sim.train.coo
    assert sim.relevance(rows, cols).all()  # a click needs relevance
    theta = sim.train_propensity(torch.from_numpy(rows), torch.from_numpy(cols))
    assert 0 < theta.min() and theta.max() <= 1
    p = sim.train_propensity.item
    popular = p >= np.quantile(p, 0.9)
    users, items = torch.meshgrid(torch.arange(0, 1500, 10), torch.arange(2000), indexing="ij")
    item_theta = sim.train_propensity(users.ravel(), items.ravel()).reshape(users.shape).mean(0).numpy()
    assert item_theta[popular].mean() > 3 * item_theta[~popular].mean()
    # relevance is not skewed, so the skew shows in clicks per item
    clicks_per_item = sim.train.item_popularity
    assert clicks_per_item[popular].mean() > 3 * clicks_per_item[~popular].mean()


def test_unbiased_test_is_uniform_and_labelled_by_relevance(sim):
    mar = sim.unbiased_test
    assert np.bincount(mar.users).max() == 10
    assert sim.train.matrix[mar.users, mar.items].sum() == 0
    gamma = sim.relevance_probability(mar.users, mar.items).numpy()
    # labels are Bernoulli(gamma) draws: their mean matches the mean gamma
    assert abs(mar.labels.mean() - gamma.mean()) < 4 * np.sqrt(gamma.mean() / len(gamma))
    counts = np.bincount(mar.items, minlength=2000)
    p = sim.train_propensity.item
    # uniform: popular and unpopular items appear about equally often
    hi, lo = counts[p >= np.median(p)].mean(), counts[p < np.median(p)].mean()
    assert 0.8 < hi / lo < 1.25


def test_empirical_click_rate_matches_exposure_times_relevance():
    sim = simulate(n_users=400, n_items=60, n_interactions=8000, seed=2)
    users, items = np.meshgrid(np.arange(400), np.arange(60), indexing="ij")
    u, i = users.ravel(), items.ravel()
    theta = sim.train_propensity(torch.from_numpy(u), torch.from_numpy(i)).double().numpy()
    expected = (theta * sim.relevance(u, i).numpy()).sum()
    assert abs(sim.train.nnz - expected) < 4 * np.sqrt(expected)


def test_item_propensity_is_aligned_and_clipped():
    prop = item_propensity(np.array([4, 0, 1, 16]), eta=0.5, clip=0.1)
    theta = prop(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 3]))
    assert theta.tolist() == pytest.approx([0.5, 0.1, 0.25, 1.0])
    with pytest.raises(RecsysError):
        item_propensity(np.zeros(3))
    with pytest.raises(RecsysError):
        Propensity(item=np.array([1.5]))
