import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data import IdMap, Interactions
from recsys.errors import RecsysError
from recsys.evaluate import evaluate, parse_ks


class FixedScores:
    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def score(self, users, items=None):
        return self.scores[torch.as_tensor(users)].clone()


def interactions(dense) -> Interactions:
    m = sp.csr_matrix(np.asarray(dense, dtype=np.float32))
    return Interactions(m, IdMap(np.arange(m.shape[0])), IdMap(np.arange(m.shape[1])))


def test_hand_computed_metrics():
    # user 0: relevant {1, 3}, ranking 3, 0, 1, 2 -> hits 1, 0, 1
    # user 1: relevant {2},    ranking 0, 1, 2, 3 -> hits 0, 0, 1
    scores = [[3, 1, 0.5, 4], [4, 3, 2, 1]]
    test = interactions([[0, 1, 0, 1], [0, 0, 1, 0]])
    r = evaluate(FixedScores(scores), test, k=[1, 3])
    idcg2 = 1 + 1 / math.log2(3)
    expect3 = {
        "recall": (1.0 + 1.0) / 2,
        "precision": (2 / 3 + 1 / 3) / 2,
        "ndcg": ((1 + 0.5) / idcg2 + 0.5) / 2,
        "map": ((1 + 2 / 3) / 2 + 1 / 3) / 2,
        "mrr": (1 + 1 / 3) / 2,
        "hit_rate": 1.0,
    }
    for name, value in expect3.items():
        assert r[f"{name}@3"] == pytest.approx(value), name
    expect1 = {"recall": 0.5, "precision": 0.5, "ndcg": 0.5, "map": 0.5, "mrr": 0.5, "hit_rate": 0.5}
    for name, value in expect1.items():
        assert r[f"{name}@1"] == pytest.approx(value), name
    assert r["coverage@1"] == pytest.approx(2 / 4)  # items 3 and 0
    assert r["users"] == 2 and r["users_skipped"] == 0


def test_training_items_are_masked_and_users_without_test_items_skipped():
    scores = [[9, 8, 1, 0], [1, 2, 3, 4], [1, 1, 1, 1]]
    train = interactions([[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    test = interactions([[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    r = evaluate(FixedScores(scores), test, train=train, k=1)
    assert r["hit_rate@1"] == 1.0  # item 0 masked for user 0, so item 1 is ranked first
    assert r["users"] == 2 and r["users_skipped"] == 1


def brute_force(scores, train, test, k, head):
    """Loop-and-set reference of every metric, written independently of the evaluator."""
    out, users = {}, [u for u in range(test.shape[0]) if test[u].any()]
    per_user, lists = {m: [] for m in ("recall", "precision", "ndcg", "map", "mrr", "hit_rate")}, []
    slices = {"head": {"recall": [], "ndcg": []}, "tail": {"recall": [], "ndcg": []}}
    for u in users:
        candidates = [i for i in range(test.shape[1]) if not train[u, i]]
        ranked = sorted(candidates, key=lambda i: -scores[u, i])[:k]
        lists.append(ranked)
        rel = set(np.flatnonzero(test[u]))

        def metrics(rel, ranked=ranked):
            hits = [i in rel for i in ranked]
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
            return hits, sum(hits) / min(k, len(rel)), dcg / idcg

        hits, rec, nd = metrics(rel)
        per_user["recall"].append(rec)
        per_user["precision"].append(sum(hits) / k)
        per_user["ndcg"].append(nd)
        ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
        per_user["map"].append(ap / min(k, len(rel)))
        per_user["mrr"].append(next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0))
        per_user["hit_rate"].append(float(any(hits)))
        for name, members in (("head", head), ("tail", set(range(test.shape[1])) - head)):
            srel = rel & members
            if srel:
                _, srec, snd = metrics(srel)
                slices[name]["recall"].append(srec)
                slices[name]["ndcg"].append(snd)
    for m, vals in per_user.items():
        out[f"{m}@{k}"] = np.mean(vals)
    for name, d in slices.items():
        for m, vals in d.items():
            out[f"{name}_{m}@{k}"] = np.mean(vals)
    pop = train.sum(0)
    out[f"coverage@{k}"] = len({i for lst in lists for i in lst}) / test.shape[1]
    out[f"avg_popularity@{k}"] = np.mean([np.mean([pop[i] for i in lst]) for lst in lists])
    out[f"tail_share@{k}"] = np.mean([np.mean([i not in head for i in lst]) for lst in lists])
    return out


@pytest.mark.parametrize(("seed", "levels"), [(0, 0), (1, 0), (2, 0), (3, 3), (4, 2)])
def test_matches_brute_force_reference(seed, levels, monkeypatch):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 60, 40, 7
    scores = rng.random((n_users, n_items))
    if levels:  # mostly ties, cut by k in most rows; blocks of 8 users
        scores = rng.integers(0, levels, (n_users, n_items)).astype(float)
        monkeypatch.setattr("recsys.ranking.MAX_BLOCK_SCORES", 8 * n_items)
    train = rng.random((n_users, n_items)) < 0.15
    test = (rng.random((n_users, n_items)) < 0.1) & ~train
    pop = train.sum(0)
    head = set(np.argsort(-pop, kind="stable")[: math.ceil(0.2 * n_items)].tolist())
    expected = brute_force(scores, train, test, k, head)
    got = evaluate(FixedScores(scores), interactions(test), train=interactions(train), k=k)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_small_batches_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(5)
    scores = rng.random((30, 20))
    train, test = interactions(rng.random((30, 20)) < 0.2), interactions(rng.random((30, 20)) < 0.2)
    full = evaluate(FixedScores(scores), test, train=train, k=[5, 10])
    monkeypatch.setattr("recsys.ranking.MAX_BLOCK_SCORES", 40)  # 2 users per batch
    batched = evaluate(FixedScores(scores), test, train=train, k=[5, 10])
    assert batched == pytest.approx(full)


def test_k_larger_than_catalogue_counts_as_misses():
    r = evaluate(FixedScores([[1, 2]]), interactions([[1, 1]]), k=4)
    assert r["precision@4"] == pytest.approx(0.5) and r["recall@4"] == pytest.approx(1.0)


def test_bad_k_and_empty_test():
    assert parse_ks("20,10,10") == [10, 20]
    for bad in ("0", "-1", "a", [], "5,0", "99999999999999999999", [2**31]):
        with pytest.raises(RecsysError, match="k must be"):
            parse_ks(bad)
    with pytest.raises(RecsysError, match="no test user"):
        evaluate(FixedScores([[1.0]]), interactions([[0]]), k=1)


def test_test_pairs_that_are_training_pairs_are_dropped_and_counted():
    """train 1,10 1,11 2,10 2,12 3,10 3,11 3,13; test 1,10 2,10 2,11; pop at k=2: user 1's only
    test item is a training item (dropped, user skipped); user 2 keeps item 11, ranked first
    (popularity 2) among its unseen items -> recall@2 = 1.0 over one user."""
    import pandas as pd

    from recsys import create_model

    train = Interactions.from_frame(pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 3],
                                                  "item_id": [10, 11, 10, 12, 10, 11, 13]}))
    test = Interactions.from_frame(pd.DataFrame({"user_id": [1, 2, 2], "item_id": [10, 10, 11]}),
                                   user_map=train.user_map, item_map=train.item_map)
    r = evaluate(create_model("pop").fit(train), test, train=train, k=2)
    assert r["recall@2"] == 1.0 and r["users"] == 1
    assert r["test_pairs_in_train"] == 2 and r["users_skipped"] == 2  # user 1, and user 3
