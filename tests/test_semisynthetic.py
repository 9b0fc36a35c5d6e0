"""Saito et al.'s semi-synthetic recipe on a small rating set with a known structure."""

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data import IdMap, Interactions
from recsys.data.semisynthetic import exposure_probability, relevance_probability, semisynthetic
from recsys.errors import RecsysError


@pytest.fixture(scope="module")
def ratings():
    """60 users x 40 items; items 0-19 are rated 5, items 20-39 rated 1; users rate 12 items,
    drawn mostly from the first 10 items (so those are 'exposed' far more often)."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(60):
        items = np.unique(np.r_[rng.choice(10, 8, replace=False), rng.choice(np.arange(10, 40), 4)])
        rows += [u] * len(items)
        cols += items.tolist()
    rows, cols = np.array(rows), np.array(cols)
    values = np.where(cols < 20, 5.0, 1.0).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(60, 40))
    return Interactions(matrix, IdMap(np.arange(60)), IdMap(np.arange(40)))


@pytest.fixture(scope="module")
def fits(ratings):
    return relevance_probability(ratings, steps=200), exposure_probability(ratings, steps=200)


def test_relevance_follows_the_ratings_and_stays_in_range(fits):
    gamma, _ = fits
    low, high = 1 / (1 + np.exp(4)), 0.5  # sigmoid(1 - 5), sigmoid(5 - 5)
    assert gamma.shape == (60, 40) and gamma.min() >= low - 1e-9 and gamma.max() <= high + 1e-9
    assert gamma[:, :20].mean() > 0.4 > 0.05 > gamma[:, 20:].mean()


def test_exposure_follows_what_is_rated(fits, ratings):
    _, theta = fits
    rated = ratings.matrix.toarray() > 0
    assert theta[rated].mean() > 3 * theta[~rated].mean()
    assert theta[:, :10].mean() > theta[:, 10:].mean()


def test_clicks_are_exposed_and_relevant_draws(ratings, fits):
    gamma, theta = fits
    sims = {p: semisynthetic(ratings, p, relevance=gamma, exposure=theta, mar_items=10, seed=3)
            for p in (1, 3)}
    sim = sims[1]
    expected = (gamma * theta).sum()  # E[clicks] = sum of gamma * theta over all pairs
    assert abs(sim.train.nnz - expected) < 4 * np.sqrt(expected)
    assert sims[3].train.nnz < sim.train.nnz  # a higher power exposes less
    np.testing.assert_allclose(sims[3].propensity.pair, theta.astype(np.float32) ** 3, rtol=1e-6)
    # the test set: uniformly drawn items the user did not click, labelled with relevance
    test = sim.unbiased_test
    clicked = sim.train.matrix.toarray() > 0
    assert not clicked[test.users, test.items].any()
    assert np.bincount(test.users, minlength=60).max() == 10
    assert abs(test.labels.mean() - gamma[test.users, test.items].mean()) < 0.06
    again = semisynthetic(ratings, 1, relevance=gamma, exposure=theta, mar_items=10, seed=3)
    assert (again.train.matrix != sim.train.matrix).nnz == 0


def test_bad_arguments_are_named(ratings, fits):
    gamma, theta = fits
    with pytest.raises(RecsysError, match="power must be positive"):
        semisynthetic(ratings, 0, relevance=gamma, exposure=theta)
    with pytest.raises(RecsysError, match="must be users x items"):
        semisynthetic(ratings, 1, relevance=gamma[:5], exposure=theta)


def test_test_set_is_missing_at_random(ratings, fits):
    """Test items are drawn uniformly among each user's unclicked items, so their exposure
    is that of the unclicked cells on average (not tilted toward what users rate), and
    E[clicks] = sum of gamma * theta^p at every power."""
    gamma, theta = fits
    sim = semisynthetic(ratings, 3, relevance=gamma, exposure=theta, mar_items=30, seed=5)
    expected = (gamma * theta**3).sum()
    assert abs(sim.train.nnz - expected) < 4 * np.sqrt(expected)
    clicked = sim.train.matrix.toarray() > 0
    test = sim.unbiased_test
    exposure = sim.propensity.pair[test.users, test.items].mean()
    per_user = np.where(~clicked, sim.propensity.pair, 0).sum(1) / (~clicked).sum(1)
    assert abs(exposure - per_user[test.users].mean()) < 0.1 * per_user.mean()
    rated = ratings.matrix.toarray() > 0
    assert rated[test.users, test.items].mean() < 0.5  # 12 of 40 items rated: about 0.3


def test_test_labels_are_draws_of_gamma(ratings, fits):
    gamma, theta = fits
    sim = semisynthetic(ratings, 2, relevance=gamma, exposure=theta, mar_items=30, seed=3)
    test = sim.unbiased_test
    g, t = gamma[test.users, test.items], theta[test.users, test.items] ** 2
    assert np.allclose(test.relevance, g)
    assert np.allclose(test.gains, g * (1 - t) / (1 - t * g))
    expected = test.gains.sum()  # E[number of relevant test labels]
    assert abs(test.labels.sum() - expected) < 4 * np.sqrt(expected)
    assert np.array_equal(test.expected().labels, test.gains)
    assert np.array_equal(test.expected("relevance").labels, test.relevance)
