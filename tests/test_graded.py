"""Graded metrics against a hand-computed case and a per-user brute force."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data import IdMap, Interactions
from recsys.errors import RecsysError
from recsys.evaluate.graded import graded_metrics

L3 = 1 / math.log2(3)  # discount at rank 2


class Fixed:
    """A scorer with a fixed users x items score matrix."""

    def __init__(self, scores):
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def score(self, users, items=None):
        return self.scores[torch.as_tensor(users)].clone()


def interactions(dense_levels, names=None):
    levels = sp.csr_matrix(np.asarray(dense_levels, dtype=np.int8))
    n_users, n_items = levels.shape
    matrix = levels.astype(np.float32)
    matrix.data[:] = 1
    return Interactions(matrix, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)),
                        levels if names is not None else None, level_names=names)


@pytest.fixture
def case():
    names = ("click", "cart", "buy")
    train = interactions([[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])
    test = interactions([[3, 1, 2, 0, 0], [0, 0, 0, 1, 0]], names)
    model = Fixed([[0.9, 0.8, 0.1, 0.5, 1.0], [1.0, 0.1, 0.2, 0.3, 0.9]])
    # user 0 ranks items 0 (buy), 1 (click), 3, 2 (cart); user 1 ranks 4, 3 (click), 2, 1
    return model, train, test


def test_hand_computed_graded_metrics(case):
    model, train, test = case
    m = graded_metrics(model, test, train=train, k=[2, 4])
    assert m["click_recall@2"] == pytest.approx(1.0)
    assert m["click_ndcg@2"] == pytest.approx((1 + L3) / 2)
    assert m["cart_recall@2"] == pytest.approx(0.5)  # only user 0 has cart-or-better items
    assert m["cart_ndcg@2"] == pytest.approx(1 / (1 + L3))
    assert m["cart_ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / (1 + L3))
    assert m["buy_recall@2"] == m["buy_ndcg@2"] == pytest.approx(1.0)
    user0 = (7 + L3) / (7 + 3 * L3)
    assert m["graded_ndcg@2"] == pytest.approx((user0 + L3) / 2)
    user0 = (7 + L3 + 3 / math.log2(5)) / (7 + 3 * L3 + 0.5)
    assert m["graded_ndcg@4"] == pytest.approx((user0 + L3) / 2)
    assert (m["click_users"], m["cart_users"], m["buy_users"], m["graded_users"]) == (2, 1, 1, 2)


def test_test_pairs_that_are_training_pairs_are_dropped(case):
    model, train, test = case
    # the case again, plus test pairs that are training pairs: user 0's item 4 (cart), user
    # 1's item 0 (click) and user 2, whose one test item (buy) is a training item
    train = interactions([[0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    test = interactions([[3, 1, 2, 0, 2], [1, 0, 0, 1, 0], [0, 0, 3, 0, 0]], test.level_names)
    model = Fixed([*model.scores.tolist(), [0.0, 0.0, 1.0, 0.0, 0.0]])
    m = graded_metrics(model, test, train=train, k=[2, 4])
    assert m["test_pairs_in_train"] == 3
    assert (m["click_users"], m["cart_users"], m["buy_users"], m["graded_users"]) == (2, 1, 1, 2)
    assert m["cart_recall@2"] == pytest.approx(0.5)
    assert m["buy_recall@2"] == pytest.approx(1.0)
    assert m["graded_ndcg@2"] == pytest.approx(((7 + L3) / (7 + 3 * L3) + L3) / 2)


def test_brute_force_on_random_levels():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 25, 7
    test_levels = rng.integers(0, 4, (n_users, n_items)) * (rng.random((n_users, n_items)) < 0.3)
    seen = (rng.random((n_users, n_items)) < 0.2) & (test_levels == 0)
    scores = rng.random((n_users, n_items))
    test = interactions(test_levels, ("a", "b", "c"))
    train = interactions(seen.astype(int))
    m = graded_metrics(Fixed(scores), test, train=train, k=k)
    disc = 1 / np.log2(np.arange(2, k + 2))
    expected = {}
    for u in range(n_users):
        order = [i for i in np.argsort(-scores[u], kind="stable") if not seen[u, i]][:k]
        got = test_levels[u, order]
        for g, name in enumerate("abc", start=1):
            rel = test_levels[u] >= g
            if rel.any():
                hits = got >= g
                n = min(k, rel.sum())
                expected.setdefault(f"{name}_recall@{k}", []).append(hits.sum() / n)
                expected.setdefault(f"{name}_ndcg@{k}", []).append(
                    (hits * disc[:len(hits)]).sum() / disc[:n].sum())
        if test_levels[u].any():
            ideal = np.sort(test_levels[u])[::-1][:k]
            expected.setdefault(f"graded_ndcg@{k}", []).append(
                ((2.0**got - 1) * disc[:len(got)]).sum() / ((2.0**ideal - 1) * disc).sum())
    for key, values in expected.items():
        assert m[key] == pytest.approx(np.mean(values)), key


def test_needs_levels(case):
    model, train, _ = case
    with pytest.raises(RecsysError, match="need test levels"):
        graded_metrics(model, train, train=train)
