"""EASE against a brute-force solution of its objective, and through save/load and serving."""

import numpy as np
import pytest
import torch

from recsys import create_model, load_model
from recsys.data import Interactions, random_split
from recsys.errors import RecsysError
from recsys.evaluate import evaluate


def brute_force_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """Column j of B: ridge regression of x_j on the other columns (B_jj = 0 by construction)."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = np.delete(np.arange(n), j)
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
    return b


@pytest.fixture(scope="module")
def tiny(small_data):
    return small_data.subset(users=np.arange(60), items=np.arange(25))


def test_weights_match_the_brute_force_closed_form(tiny):
    model = create_model("ease", regularization=7.0, device="cpu").fit(tiny)
    x = (tiny.matrix.toarray() > 0).astype(np.float64)
    expected = brute_force_weights(x, 7.0)
    assert np.abs(np.diag(model.weights_.numpy())).max() == 0
    np.testing.assert_allclose(model.weights_.numpy(), expected, rtol=1e-4, atol=1e-6)
    users = np.array([3, 0, 17])
    np.testing.assert_allclose(model.score(users).numpy(), x[users] @ expected, rtol=1e-4, atol=1e-5)
    items = np.array([5, 2])
    np.testing.assert_allclose(model.score(users, items).numpy(), (x[users] @ expected)[:, items],
                               rtol=1e-4, atol=1e-5)


def test_ratings_count_as_interactions(tiny):
    weighted = Interactions(tiny.matrix * 5, tiny.user_map, tiny.item_map)
    a = create_model("ease", regularization=3.0).fit(tiny)
    b = create_model("ease", regularization=3.0).fit(weighted)
    assert torch.equal(a.weights_, b.weights_)


def test_save_load_recommend_and_beat_popularity(small_data, tmp_path):
    train, test = random_split(small_data, test_frac=0.2, seed=0)
    model = create_model("ease", regularization=50.0).fit(train)
    model.save(tmp_path / "ease")
    loaded = load_model(tmp_path / "ease")
    users = np.arange(train.n_users)
    assert torch.equal(model.score(users), loaded.score(users))
    items, scores = loaded.recommend(users[:5], 10, exclude=train)
    for u in range(5):
        assert not set(items[u]) & set(train.matrix[u].indices)
    pop = evaluate(create_model("pop").fit(train), test, train=train, k=10)["ndcg@10"]
    assert evaluate(loaded, test, train=train, k=10)["ndcg@10"] > pop


def test_too_many_items_is_a_clear_error(tiny):
    with pytest.raises(RecsysError, match=r"25 items need two dense 25 x 25 float64.*max_items=10"):
        create_model("ease", max_items=10).fit(tiny)
    with pytest.raises(RecsysError, match="regularization"):
        create_model("ease", regularization=0.0)


def test_serving_engine_ranks_like_the_model(small_data):
    from serving.engine import Engine

    model = create_model("ease", regularization=20.0).fit(small_data)
    engine = Engine(model, small_data)
    user_ids = small_data.user_map.ids[:6].tolist()
    got = engine.recommend_many(user_ids, 8)
    items, scores = model.recommend(np.arange(6), 8, exclude=small_data)
    for row, ranked in enumerate(got):
        assert ranked.item_ids == small_data.item_map.to_ids(items[row]).tolist()
        np.testing.assert_allclose(ranked.scores, scores[row], rtol=1e-5)
