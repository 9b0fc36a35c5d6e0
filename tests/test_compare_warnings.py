"""`recsys compare` says when a test set is too small for its metrics to separate models."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from pipelines.compare import MIN_TEST_USERS, Prepared, small_test_warnings
from recsys.data.interactions import Interactions
from recsys.data.simulate import CandidateSet
from recsys.evaluate.evaluator import evaluable_users


def split_from_pairs(train_pairs, test_pairs):
    """Train and test on the same id maps, from lists of (user, item) pairs."""
    full = Interactions.from_frame(pd.DataFrame(sorted(set(train_pairs) | set(test_pairs)),
                                                columns=["user_id", "item_id"]))
    rows, cols = full.coo
    pairs = list(zip(full.user_map.ids[rows], full.item_map.ids[cols], strict=True))
    in_train = np.array([p in set(train_pairs) for p in pairs])
    in_test = np.array([p in set(test_pairs) for p in pairs])
    return full.with_pairs(rows, cols, in_train), full.with_pairs(rows, cols, in_test)


def test_evaluable_users_leave_out_test_pairs_seen_in_training():
    train, test = split_from_pairs([(1, 10), (1, 11), (2, 10), (2, 12), (3, 10), (3, 11), (3, 13)],
                                   [(1, 10), (2, 10), (2, 11)])
    # user 1's only test pair is a training pair; user 2 keeps (2, 11); user 3 has no test pair
    assert evaluable_users(test, train) == (1, 1)
    assert evaluable_users(test) == (2, 3)


def test_a_tiny_test_set_is_named_with_its_size_and_noise():
    train, test = split_from_pairs([(1, 10), (1, 11), (2, 10), (2, 12), (3, 10), (3, 11), (3, 13)],
                                   [(1, 10), (2, 10), (2, 11)])
    (line,) = small_test_warnings(Prepared(train, test, "hand-made"))
    assert "test set has only 1 users" in line
    assert "1 test pairs outside training; 2 of 3 users have none" in line
    assert f"{0.5:.2f}" in line  # 0.5 / sqrt(1)


def test_enough_test_users_give_no_warning_but_a_thin_unbiased_set_does():
    users = np.arange(MIN_TEST_USERS)
    train, test = split_from_pairs([(u, 0) for u in users] + [(u, 1) for u in users],
                                   [(u, 2) for u in users])
    assert small_test_warnings(Prepared(train, test, "hand-made")) == []
    # 30 users with a relevant candidate (the others only irrelevant ones)
    labels = np.r_[np.ones(30), np.zeros(MIN_TEST_USERS - 30)].astype(np.int8)
    unbiased = CandidateSet(users=users, items=np.full(MIN_TEST_USERS, 3), labels=labels)
    sim = SimpleNamespace(unbiased_test=unbiased)
    (line,) = small_test_warnings(Prepared(train, test, "hand-made", simulation=sim))
    assert line.startswith("the unbiased test set has only 30 users")
    assert f"{0.5 / np.sqrt(30):.2f}" in line
