import math

import numpy as np
import pytest
import torch

from recsys import create_model
from recsys.data.simulate import CandidateSet, expected_labels, simulate
from recsys.errors import RecsysError
from recsys.evaluate.unbiased import candidate_metrics, ips_metrics, true_metrics


class FixedScores:
    def __init__(self, scores):
        self.scores = torch.as_tensor(np.asarray(scores), dtype=torch.float32)

    def score(self, users, items=None):
        return self.scores[torch.as_tensor(users)].clone()


def test_candidate_metrics_hand_computed():
    scores = [[0.2, 0.9, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3]]
    cands = CandidateSet(users=np.array([0, 0, 0, 1, 1, 2]), items=np.array([0, 1, 2, 1, 3, 3]),
                         labels=np.array([1, 0, 1, 0, 0, 1], dtype=np.float32))
    rare = np.array([True, False, False, False])
    r = candidate_metrics(FixedScores(scores), cands, k=[1, 3], rare_items=rare)
    # user 0 ranks items 1, 2, 0 (hits at ranks 2 and 3); user 1 has no positive; user 2: 1 hit
    dcg0 = 1 / math.log2(3) + 1 / math.log2(4)
    assert r["users"] == 2
    assert r["dcg@3"] == pytest.approx((dcg0 + 1) / 2)
    assert r["dcg@1"] == pytest.approx(0.5)
    assert r["recall@3"] == pytest.approx(1.0) and r["recall@1"] == pytest.approx(0.5)
    assert r["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert r["rare_users"] == 1 and r["rare_dcg@3"] == pytest.approx(0.5)
    assert r["rare_recall@1"] == 0.0


def test_expected_candidates_weigh_ranks_by_their_expected_labels():
    scores = [[0.2, 0.9, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]
    cands = CandidateSet(users=np.array([0, 0, 0, 1, 1]), items=np.array([0, 1, 2, 1, 3]),
                         labels=np.array([1, 0, 1, 0, 0], dtype=np.float32),
                         gains=np.array([0.5, 0.2, 0.8, 0.1, 0.3], dtype=np.float32))
    r = candidate_metrics(FixedScores(scores), cands.expected(), k=[2])
    # user 0 ranks items 1, 2, 0; user 1's tie puts item 1 before item 3; gain / log2(rank + 1)
    user0, user1 = 0.2 + 0.8 / math.log2(3), 0.1 + 0.3 / math.log2(3)
    assert r["users"] == 2  # every user counts, also one without a drawn relevant item
    assert r["dcg@2"] == pytest.approx((user0 + user1) / 2)
    with pytest.raises(RecsysError, match="no expected relevances"):
        cands.expected("relevance")


def test_expected_label_of_an_unclicked_pair():
    # gamma 0.5, theta 0.5: P(R=1, no click) = 0.25, P(no click) = 0.75
    assert expected_labels(np.array([0.5, 0.2, 1.0, 1.0]), np.array([0.5, 0.0, 0.5, 1.0])) == pytest.approx(
        [1 / 3, 0.2, 1.0, 0.0])  # the last pair is always clicked


def test_simulated_test_labels_are_draws_of_their_gains():
    s = simulate(n_users=2000, n_items=1000, n_interactions=20000, seed=1)
    test = s.unbiased_test
    assert np.allclose(test.relevance, s.relevance_probability(test.users, test.items).numpy())
    assert (test.gains <= test.relevance + 1e-7).all() and (test.gains < test.relevance).mean() > 0.9
    expected = test.gains.sum()  # E[number of relevant test labels]
    assert abs(test.labels.sum() - expected) < 4 * np.sqrt(expected)


@pytest.fixture(scope="module")
def sim():
    return simulate(n_users=3000, n_items=1500, n_interactions=40000, popularity_bias=1.5, seed=4)


def test_snips_and_ips_track_the_truth_better_than_naive(sim):
    oracle = sim.affinity * sim.user_factors @ sim.item_factors.T + sim.bias
    rng = np.random.default_rng(0)
    scorers = {
        "oracle": FixedScores(oracle),
        "popularity": create_model("pop").fit(sim.train),
        "random": FixedScores(rng.random(oracle.shape)),
        "oracle+pop": FixedScores(
            oracle + 2 * torch.log(torch.from_numpy(sim.train_propensity.item)).float()),
    }
    err = {"naive_recall": 0.0, "snips_recall": 0.0, "naive_dcg": 0.0, "ips_dcg": 0.0}
    for model in scorers.values():
        est = ips_metrics(model, sim.test, train=sim.train, propensity=sim.test_propensity, k=5)
        users = np.flatnonzero(sim.test.user_degree > 0)
        truth = true_metrics(model, sim, train=sim.train, users=users, k=5)
        err["naive_recall"] += abs(est["naive_recall@5"] - truth["recall@5"])
        err["snips_recall"] += abs(est["snips_recall@5"] - truth["recall@5"])
        err["naive_dcg"] += abs(est["naive_dcg@5"] - truth["dcg@5"])
        err["ips_dcg"] += abs(est["ips_dcg@5"] - truth["dcg@5"])
    assert err["snips_recall"] < 0.5 * err["naive_recall"]
    assert err["ips_dcg"] < 0.5 * err["naive_dcg"]
