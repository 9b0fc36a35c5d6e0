"""Ordinal losses against hand-computed values, BCE (L = 1), the paper's L = 2 formula and
high-precision references where the naive formula breaks down."""

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.losses.ordinal import (
    cumulative_link_loss,
    log1mexp,
    nested_ordinal_loss,
    ordered_thresholds,
    ordinal_nll,
)

LOG3 = math.log(3.0)  # sigmoid(log 3) = 0.75


def t(*values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_three_class_probabilities_by_hand():
    # P(y>=1) = 0.75, P(y>=2) = 0.25: P(y=0) = 0.25, P(y=1) = 0.5, P(y=2) = 0.25
    eta = t(LOG3, -LOG3).expand(3, 2)
    loss = ordinal_nll(eta, torch.tensor([0, 1, 2]))
    assert loss.tolist() == pytest.approx([-math.log(0.25), -math.log(0.5), -math.log(0.25)])


def test_one_level_is_binary_cross_entropy():
    logits = torch.linspace(-6, 6, 9, dtype=torch.float64)
    labels = torch.tensor([0, 1] * 4 + [1])
    expected = F.binary_cross_entropy_with_logits(logits, labels.double(), reduction="none")
    assert torch.allclose(ordinal_nll(logits[:, None], labels), expected)
    assert torch.allclose(nested_ordinal_loss(logits[:, None], labels), expected)


def test_nested_loss_for_two_levels_is_the_papers_formula():
    # L1 = BCE(y1, P1); L2 = -[(1 - y1) ln(1 - P1) + (y1 - y2) ln(P1 - P2) + y2 ln P2]
    gen = torch.Generator().manual_seed(0)
    eta1 = torch.randn(50, generator=gen, dtype=torch.float64) * 3
    eta2 = eta1 - torch.rand(50, generator=gen, dtype=torch.float64) * 4 - 0.01
    labels = torch.randint(0, 3, (50,), generator=gen)
    p1, p2 = torch.sigmoid(eta1), torch.sigmoid(eta2)
    y1, y2 = (labels >= 1).double(), (labels >= 2).double()
    bce = -(y1 * torch.log(p1) + (1 - y1) * torch.log(1 - p1))
    olr = -((1 - y1) * torch.log(1 - p1) + (y1 - y2) * torch.log(p1 - p2) + y2 * torch.log(p2))
    got = nested_ordinal_loss(torch.stack([eta1, eta2], 1), labels)
    assert torch.allclose(got, bce + olr)


def test_nested_loss_for_three_levels_by_hand():
    # P(y>=k) = 0.75, 0.5, 0.25: every grade has probability 0.25
    eta = t(LOG3, 0.0, -LOG3).expand(4, 3)
    got = nested_ordinal_loss(eta, torch.tensor([0, 1, 2, 3]))
    ln = math.log
    expected = [
        -3 * ln(0.25),                          # no feedback in all three ladders
        -ln(0.75) - 2 * ln(0.25),               # ladder 1: reached; ladders 2, 3: exactly 1
        -ln(0.75) - ln(0.5) - ln(0.25),         # ladders 1, 2: reached; ladder 3: exactly 2
        -ln(0.75) - ln(0.5) - ln(0.25),         # reached in every ladder
    ]
    assert got.tolist() == pytest.approx(expected)


def test_nested_loss_equals_the_sum_of_truncated_ladders():
    gen = torch.Generator().manual_seed(1)
    steps = torch.rand(40, 4, generator=gen, dtype=torch.float64) * 3 + 0.05
    eta = 2.0 - torch.cumsum(steps, 1)
    labels = torch.randint(0, 5, (40,), generator=gen)
    ladders = sum(ordinal_nll(eta[:, :k], labels.clamp(max=k)) for k in range(1, 5))
    assert torch.allclose(nested_ordinal_loss(eta, labels), ladders)


def test_cumulative_link_with_ordered_thresholds():
    thresholds = t(-LOG3, LOG3)  # score 0: P(y>=1) = 0.75, P(y>=2) = 0.25
    loss = cumulative_link_loss(t(0.0, 0.0, 0.0), thresholds, torch.tensor([0, 1, 2]))
    assert loss.tolist() == pytest.approx([-math.log(0.25), -math.log(0.5), -math.log(0.25)])
    raw = torch.tensor([[-80.0, 30.0, 0.0], [5.0, -5.0, -200.0]])
    theta = ordered_thresholds(torch.tensor([3.0, -20.0]), raw)
    assert theta.shape == (2, 4) and bool((theta.diff(dim=-1) > 0).all())
    assert theta[0, 0] == 3.0


def test_close_and_extreme_logits_stay_finite_and_accurate():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    cases = [(60.0, 59.9999), (-40.0, -40.001), (0.3, 0.2999), (30.0, -30.0), (1e-3, -1e-3)]
    eta = torch.tensor(cases, dtype=torch.float32, requires_grad=True)
    labels = torch.ones(len(cases), dtype=torch.long)
    loss = ordinal_nll(eta, labels)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(eta.grad).all()
    naive = torch.log(torch.sigmoid(eta[:, 0]) - torch.sigmoid(eta[:, 1]))
    assert not torch.isfinite(naive[0])  # what the probability difference gives in float32
    for (x, y), got, x32, y32 in zip(cases, loss.tolist(), eta[:, 0].tolist(), eta[:, 1].tolist(),
                                     strict=True):
        x, y = mpmath.mpf(x32), mpmath.mpf(y32)  # the float32 inputs, exactly
        sig = lambda v: 1 / (1 + mpmath.exp(-v))  # noqa: E731
        reference = -mpmath.log(sig(x) - sig(y))
        assert got == pytest.approx(float(reference), rel=1e-4)


def test_log1mexp_and_gradients():
    d = torch.tensor([1e-30, 1e-8, 0.1, math.log(2), 5.0, 50.0], dtype=torch.float64)
    reference = torch.log(-torch.expm1(-d))
    assert torch.allclose(log1mexp(d), reference, rtol=1e-12)
    eta = torch.tensor([[1.0, -0.5, -2.0], [0.1, 0.0999, -10.0]], dtype=torch.float64,
                       requires_grad=True)
    labels = torch.tensor([2, 1])
    assert torch.autograd.gradcheck(lambda e: nested_ordinal_loss(e, labels), (eta,))
    assert torch.autograd.gradcheck(lambda e: ordinal_nll(e, labels), (eta,))
