import math

import pytest
import torch

from recsys.losses import bce_loss, bpr_loss, ideal_loss, relmf_loss, ubpr_loss, wmf_loss

LOG3 = math.log(3.0)  # sigmoid(log 3) = 0.75
D1, D0 = -math.log(0.75), -math.log(0.25)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_hand_computed_pointwise_values():
    logit = t(LOG3)
    assert bce_loss(logit, t(1.0)).item() == pytest.approx(D1)
    assert bce_loss(logit, t(0.0)).item() == pytest.approx(D0)
    assert bce_loss(logit, t(1.0), per_pair="square").item() == pytest.approx(0.0625)
    assert wmf_loss(logit, t(0.0), neg_weight=0.2).item() == pytest.approx(0.2 * D0)
    # clicked, theta = 0.5: weight 2 on delta1 and 1 - 2 = -1 on delta0
    assert relmf_loss(logit, t(1.0), t(0.5)).item() == pytest.approx(2 * D1 - D0)
    # clipped at 0.8: weight 1.25 and -0.25
    assert relmf_loss(logit, t(1.0), t(0.5), clip=0.8).item() == pytest.approx(1.25 * D1 - 0.25 * D0)
    assert relmf_loss(logit, t(0.0), t(0.5)).item() == pytest.approx(D0)
    assert relmf_loss(logit, t(1.0), t(0.5), per_pair="square").item() == pytest.approx(
        2 * 0.0625 - 0.5625)


def test_hand_computed_pairwise_values():
    assert bpr_loss(t(LOG3), t(0.0)).item() == pytest.approx(D1)
    # (1 - 1/0.25) / 0.5 = -6 times -log sigmoid(log 3)
    loss = ubpr_loss(t(LOG3), t(0.0), t(0.5), t(1.0), t(0.25))
    assert loss.item() == pytest.approx(-6 * D1)
    assert ubpr_loss(t(LOG3), t(0.0), t(0.5), t(1.0), t(0.25), beta=1.0).item() == -1.0
    assert ubpr_loss(t(LOG3), t(0.0), t(0.5), t(0.0), t(0.25)).item() == pytest.approx(2 * D1)


def test_unclipped_relmf_is_unbounded_below_and_clipping_bounds_it():
    logits = torch.linspace(0, 30, 7, dtype=torch.float64)
    raw = relmf_loss(logits, torch.ones(7, dtype=torch.float64), torch.full((7,), 0.01, dtype=torch.float64))
    assert raw[-1] < -1000 and torch.all(raw[1:] < raw[:-1])
    clipped = relmf_loss(logits, torch.ones(7, dtype=torch.float64),
                         torch.full((7,), 0.01, dtype=torch.float64), clip=1.0)
    assert torch.all(clipped >= 0)
    floored = relmf_loss(logits, torch.ones(7, dtype=torch.float64),
                         torch.full((7,), 0.01, dtype=torch.float64), beta=4.0)
    assert torch.equal(floored, raw.clamp(min=-4.0)) and floored[0] == raw[0] > -4.0


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    n = 6
    return {
        "logits": torch.randn(n, generator=gen, dtype=torch.float64),
        "gamma": torch.rand(n, generator=gen, dtype=torch.float64) * 0.8 + 0.1,
        "theta": torch.rand(n, generator=gen, dtype=torch.float64) * 0.7 + 0.2,
        "draws": 200_000,
        "gen": gen,
    }


def draw_clicks(p):
    exposure = torch.rand(p["draws"], len(p["theta"]), generator=p["gen"], dtype=torch.float64) < p["theta"]
    relevant = torch.rand(p["draws"], len(p["gamma"]), generator=p["gen"], dtype=torch.float64) < p["gamma"]
    return (exposure & relevant).double()


def test_monte_carlo_relmf_is_unbiased_and_naive_is_not(problem):
    p = problem
    ideal = ideal_loss(p["logits"], p["gamma"]).sum().item()
    clicks = draw_clicks(p)
    unbiased = relmf_loss(p["logits"], clicks, p["theta"]).sum(1)
    naive = bce_loss(p["logits"], clicks).sum(1)
    se = unbiased.std().item() / math.sqrt(p["draws"])
    assert abs(unbiased.mean().item() - ideal) < 4 * se
    assert abs(naive.mean().item() - ideal) > 20 * naive.std().item() / math.sqrt(p["draws"])


def test_monte_carlo_ubpr_is_unbiased(problem):
    p = problem
    s, gamma, theta = p["logits"], p["gamma"], p["theta"]
    i, j = torch.meshgrid(torch.arange(len(s)), torch.arange(len(s)), indexing="ij")
    off = i != j
    i, j = i[off], j[off]
    ideal = (gamma[i] * (1 - gamma[j]) * bpr_loss(s[i], s[j])).sum().item()
    clicks = draw_clicks(p)
    per_draw = (clicks[:, i] * ubpr_loss(s[i], s[j], theta[i], clicks[:, j], theta[j])).sum(1)
    se = per_draw.std().item() / math.sqrt(p["draws"])
    assert abs(per_draw.mean().item() - ideal) < 4 * se
