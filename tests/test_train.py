"""The shared training loop and the torch fit template."""

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from recsys import Interactions, create_model
from recsys.data import random_split
from recsys.data.sampling import PairSampler
from recsys.errors import RecsysError
from recsys.evaluate import evaluate
from recsys.losses import bpr_loss
from recsys.models.base import _REGISTRY, register
from recsys.models.mf import Embeddings
from recsys.models.params import Positive
from recsys.models.torch_model import TorchRecommender
from recsys.train import EarlyStopping, Optim, StepFunctions, train_loop


class Scalar(nn.Module):
    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))


def quadratic_step(module: Scalar, n_batches: int = 3) -> StepFunctions:
    """Loss parts a = (w - 1)^2 and b = 2 (constant), `n_batches` steps per epoch."""
    return StepFunctions(lambda epoch: [()] * n_batches,
                         lambda: {"a": ((module.w - 1) ** 2).sum(), "b": torch.tensor(2.0)})


def test_loss_parts_are_epoch_means_of_a_plain_adam_loop():
    module = Scalar()
    result = train_loop(module, quadratic_step(module), epochs=2, optim=Optim(lr=0.1), progress=False)
    # the same optimisation written out by hand
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    per_step = []
    for _ in range(6):
        opt.zero_grad()
        loss = ((w - 1) ** 2).sum()
        per_step.append(loss.item())
        loss.backward()
        opt.step()
    for epoch, h in enumerate(result.history):
        a = np.mean(per_step[3 * epoch:3 * epoch + 3])
        assert h["a"] == pytest.approx(a) and h["b"] == 2.0 and h["loss"] == pytest.approx(a + 2)
    assert torch.equal(module.w.detach(), w.detach())
    assert result.best_epoch == 2 and result.best_score is None


def test_hooks_are_called_in_order_on_the_step_and_on_hook_objects():
    calls = []

    class Recorder:
        def on_train_start(self):
            calls.append("start")

        def on_epoch_start(self, epoch):
            calls.append(("epoch", epoch))

        def after_step(self, step):
            calls.append(("step", step))

        def on_epoch_end(self, epoch, logs):
            calls.append(("end", epoch, sorted(logs)))

    module = Scalar()
    step = quadratic_step(module, n_batches=2)

    class StepWithHook:
        def __init__(self):
            self.batches, self.loss = step.batches, step.loss

        def on_epoch_start(self, epoch):
            calls.append(("step object", epoch))

    train_loop(module, StepWithHook(), epochs=2, hooks=[Recorder()], progress=False, prefix="x_")
    keys = ["x_a", "x_b", "x_loss", "x_seconds"]
    assert calls == ["start", ("step object", 1), ("epoch", 1), ("step", 1), ("step", 2),
                     ("end", 1, keys), ("step object", 2), ("epoch", 2), ("step", 3), ("step", 4),
                     ("end", 2, keys)]


def test_early_stopping_restores_the_best_epoch_and_respects_warmup():
    module = Scalar()
    scores = iter([0.9, 0.2, 0.5, 0.4, 0.3, 0.1, 0.0])
    weights = []

    def validate():
        weights.append(module.w.item())
        return next(scores)

    result = train_loop(module, quadratic_step(module), epochs=7, optim=Optim(lr=0.1),
                        stopping=EarlyStopping(validate, patience=2, warmup=1), progress=False)
    # epoch 1 (0.9) is inside the warmup; 0.5 at epoch 3 is the best; no gain at 4 and 5: stop
    assert result.best_epoch == 3 and result.best_score == 0.5 and len(result.history) == 5
    assert module.w.item() == weights[2]
    assert [h["valid"] for h in result.history] == [0.9, 0.2, 0.5, 0.4, 0.3]


def test_validating_every_third_epoch_chooses_among_those():
    module = Scalar()
    scores = iter([0.1, 0.3, 0.2, 0.25])
    validated = []

    def validate():
        validated.append(len(validated))
        return next(scores)

    result = train_loop(module, quadratic_step(module), epochs=20, optim=Optim(lr=0.1),
                        stopping=EarlyStopping(validate, patience=6, every=3), progress=False)
    # validated after epochs 3, 6, 9, 12; best 6; 12 - 6 >= patience: stop
    assert [h["epoch"] for h in result.history if "valid" in h] == [3, 6, 9, 12]
    assert result.best_epoch == 6 and len(result.history) == 12


def test_gradient_clipping_bounds_the_norm_seen_after_each_step():
    module = Scalar(100.0)  # gradient 2 (w - 1) = 198
    norms = []

    class Probe:
        def after_step(self, step):
            norms.append(module.w.grad.norm().item())

    train_loop(module, quadratic_step(module), epochs=1, optim=Optim(clip_grad=0.5),
               hooks=[Probe()], progress=False)
    assert norms and all(n == pytest.approx(0.5) for n in norms)


def test_cosine_schedule_and_adamw():
    w = [nn.Parameter(torch.zeros(1))]
    optimizer, scheduler = Optim("adamw", lr=0.1, weight_decay=0.01, schedule="cosine").build(w, 4)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.01
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * min(e, 4) / 4)) for e in range(5)]
    assert lrs == pytest.approx(expected) and lrs[-1] == 0.0
    _, constant = Optim().build(w, 4)
    assert constant is None


def test_a_diverging_loss_is_one_error():
    module = Scalar()
    step = StepFunctions(lambda epoch: [()], lambda: (module.w * float("nan")).sum())
    with pytest.raises(RecsysError, match="loss became nan at epoch 1; lower the learning rate"):
        train_loop(module, step, epochs=3, progress=False)


# ---- the template ---------------------------------------------------------------------------

@dataclass(eq=False, repr=False, kw_only=True)
class TinyBPR(TorchRecommender):
    """A complete family in a few lines: the docstring example of recsys/models/torch_model.py."""

    factors: Positive[int] = 8

    def build(self, train, device):
        self.sampler_ = PairSampler(train, self.batch_size or 512, seed=self.seed, device=device)
        return Embeddings(train.n_users, train.n_items, self.factors).to(device)

    def batches(self, epoch):
        return self.sampler_

    def loss(self, users, pos, neg):
        u, i, j = self.module_.users(users), self.module_.items(pos), self.module_.items(neg)
        return {"bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1)).mean(),
                "reg": 1e-3 * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / len(users)}

    def export(self):
        return self.module_.users.weight, self.module_.items.weight


@pytest.fixture
def tiny_family():
    register("tiny_bpr")(TinyBPR)
    yield TinyBPR
    del _REGISTRY["tiny_bpr"]


@pytest.fixture(scope="module")
def split_data(small_data):
    return random_split(small_data, test_frac=0.2, seed=0)


class Recorder:
    def __init__(self):
        self.calls = []

    def on_epoch_end(self, epoch, logs):
        self.calls.append((epoch, logs))


def test_a_minimal_family_trains_logs_its_parts_and_refits_apart(tiny_family, split_data):
    recorder = Recorder()
    model = create_model("tiny_bpr", epochs=40, lr=0.02, patience=3, progress=False, device="cpu")
    model.fit(split_data.train, callbacks=[recorder])
    info = model.fit_info_
    selection = [(e, logs) for e, logs in recorder.calls if "loss" in logs]
    refit = [(e, logs) for e, logs in recorder.calls if "refit_loss" in logs]
    assert [e for e, _ in selection] == list(range(1, info["epochs_run"] + 1))
    assert [e for e, _ in refit] == list(range(1, info["best_epoch"] + 1))
    assert all(logs["loss"] == pytest.approx(logs["bpr"] + logs["reg"]) and "valid" in logs
               for _, logs in selection)
    assert all(set(logs) == {"refit_loss", "refit_bpr", "refit_reg", "refit_seconds"} for _, logs in refit)
    assert model.history_ == [{"epoch": e, **logs} for e, logs in recorder.calls]
    train, test = split_data
    pop = evaluate(create_model("pop").fit(train), test, train=train, k=10)["ndcg@10"]
    assert evaluate(model, test, train=train, k=10)["ndcg@10"] > pop


def test_without_refit_the_factors_are_the_best_validated_epoch(tiny_family, split_data):
    model = create_model("tiny_bpr", epochs=8, lr=0.02, refit=False, progress=False, device="cpu")
    model.fit(split_data.train)
    # the restored module is the one exported
    assert torch.equal(model.item_factors(), model.module_.items.weight.detach())
    assert max(h["valid"] for h in model.history_) == model.fit_info_["best_valid"]


def test_tiny_data_trains_without_early_stopping_and_says_so(caplog):
    # every user has 2 items: a 10% holdout rounds to 0 items per user
    users = np.repeat(np.arange(30), 2)
    items = (users * 7 + np.tile([0, 1], 30)) % 40
    data = Interactions.from_frame(pd.DataFrame({"user_id": users, "item_id": items}))
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="recsys"):
        model = create_model("mf", factors=4, epochs=3, progress=False, device="cpu")
        model.fit(data, callbacks=[recorder])
    assert "validation holdout left no pairs" in caplog.text and "without early stopping" in caplog.text
    assert model.fit_info_["early_stopping"].startswith("off: the validation holdout left no pairs")
    assert [e for e, _ in recorder.calls] == [1, 2, 3]  # all epochs, no refit
    assert model.fit_info_["epochs_run"] == 3 and model.fit_info_["best_valid"] is None


def test_warmup_covering_every_epoch_trains_once_without_early_stopping(split_data, caplog):
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="recsys"):
        model = create_model("mf", factors=4, epochs=2, warmup=2, progress=False, device="cpu")
        model.fit(split_data.train, callbacks=[recorder])
    assert "warmup=2 >= epochs=2" in caplog.text
    assert model.fit_info_["early_stopping"].startswith("off: warmup=2 >= epochs=2")
    assert [e for e, _ in recorder.calls] == [1, 2]  # on all the data, no refit
    assert model.fit_info_["best_valid"] is None and model.fit_info_["epochs_run"] == 2


def test_automatic_validation_sample_bounds_the_scores():
    from recsys.models.torch_model import auto_valid_users

    # 2^23 scores per validation, between 2000 and 10000 users
    assert [auto_valid_users(n) for n in (150, 838, 839, 1682, 4000, 4194, 4195, 10**6)] == [
        10000, 10000, 9998, 4987, 2097, 2000, 2000, 2000]


def test_shared_settings_are_declared_once():
    from recsys.models.mf import MF

    shared = TorchRecommender.param_defaults()
    assert {"epochs", "lr", "optimizer", "weight_decay", "schedule", "clip_grad", "patience",
            "warmup", "valid_frac", "refit", "valid_metric", "valid_users", "valid_every", "seed",
            "device",
            "progress", "batch_size"} <= set(shared)
    assert set(shared) < set(MF.param_defaults())
    assert "epochs" not in MF.__dict__.get("__annotations__", {})
