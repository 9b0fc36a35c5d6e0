"""Feature masking for SSL (RFM/CFM): mutual information, masks, value dropout."""

import math

import numpy as np
import torch

from recsys.augment.feature_mask import (
    cfm_groups,
    cfm_masks,
    drop_values,
    mi_matrix,
    mutual_information,
    rfm_masks,
)


def test_mutual_information_matches_hand_computation():
    # identical binary variables: MI = H = log 2; independent ones: 0
    assert math.isclose(mutual_information([0, 0, 1, 1], [5, 5, 9, 9]), math.log(2))
    assert abs(mutual_information([0, 0, 1, 1], [0, 1, 0, 1])) < 1e-12
    # weighted rows: P(0,0) = P(0,1) = 1/4, P(1,1) = 1/2; P_a = (1/2, 1/2), P_b = (1/4, 3/4)
    expected = (0.25 * math.log(0.25 / (0.5 * 0.25)) + 0.25 * math.log(0.25 / (0.5 * 0.75))
                + 0.5 * math.log(0.5 / (0.5 * 0.75)))
    assert math.isclose(mutual_information([0, 0, 1], [0, 1, 1], [1, 1, 2]), expected)
    # a row of weight 0 changes nothing
    assert math.isclose(mutual_information([0, 0, 1, 7], [0, 1, 1, 3], [1, 1, 2, 0]), expected)


def test_cfm_groups_take_the_seed_and_its_top_partners():
    codes = [np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 2, 2]),  # fields 0, 1 equal
             np.array([0, 1, 0, 1, 0, 1]), np.array([0, 1, 0, 1, 0, 0])]  # 2, 3 close
    mi = mi_matrix(codes)
    assert np.allclose(mi, mi.T) and np.all(np.diag(mi) == 0)
    assert math.isclose(mi[0, 1], math.log(3))
    groups = cfm_groups(mi, 1)
    assert groups.tolist() == [[True, True, False, False], [True, True, False, False],
                               [False, False, True, True], [False, False, True, True]]
    # default: half the fields as partners, but never all fields
    assert cfm_groups(mi).sum(1).tolist() == [3, 3, 3, 3]
    assert cfm_groups(mi_matrix(codes[:2])).sum(1).tolist() == [1, 1]


def test_rfm_masks_are_random_halves_and_cfm_masks_are_groups():
    gen = torch.Generator().manual_seed(0)
    mask = rfm_masks(500, 5, gen)
    assert mask.shape == (500, 5) and (mask.sum(1) == 2).all()
    # every field is masked in some rows and kept in others; the two views are complementary
    assert (mask.float().mean(0) - 0.4).abs().max() < 0.1
    assert not (mask & ~mask).any() and (mask | ~mask).all()
    groups = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
    masks = cfm_masks(300, groups, gen)
    rows = {tuple(r) for r in masks.tolist()}
    assert rows == {tuple(g) for g in groups.tolist()}
    assert (~masks).any(1).all()  # the other view always keeps a field


def test_drop_values_zeroes_multi_valued_codes_only():
    gen = torch.Generator().manual_seed(0)
    batch = {"tags": torch.randint(1, 9, (400, 6)), "genre": torch.randint(1, 9, (400,))}
    assert torch.equal(drop_values(batch, ["tags"], 0.0, gen)["tags"], batch["tags"])
    dropped = drop_values(batch, ["tags"], 0.3, gen)
    assert torch.equal(dropped["genre"], batch["genre"])
    zero = dropped["tags"] == 0
    assert abs(zero.float().mean().item() - 0.3) < 0.03
    assert torch.equal(dropped["tags"][~zero], batch["tags"][~zero])
    assert (drop_values(batch, ["tags"], 1.0, gen)["tags"] == 0).all()
