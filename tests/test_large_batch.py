"""Automatic batch sizes: larger BPR batches on CUDA, with the learning rate grown to match."""

import math
from types import SimpleNamespace

import pytest
import torch

from recsys import create_model
from recsys.data import random_split
from recsys.models.mf import MF
from recsys.models.torch_model import sqrt_scaled_lr


def test_sqrt_scaling_grows_the_rate_and_never_shrinks_it():
    assert sqrt_scaled_lr(0.002, 32768) == pytest.approx(0.002 * math.sqrt(8))
    assert sqrt_scaled_lr(0.01, 16384, reference=1024) == pytest.approx(0.04)
    assert sqrt_scaled_lr(0.002, 1024) == 0.002


@pytest.mark.parametrize(("nnz", "device", "loss", "batch"), [
    (10**7, "cpu", "bpr", 4096),        # the CPU keeps at most 4096
    (10**7, "cuda", "bpr", 32768),      # CUDA allows 32768 for BPR
    (10**7, "cuda", "relmf", 4096),     # other losses were not validated beyond 4096
    (10**6, "cuda", "bpr", 8192),       # about 64 steps: 10^6 / 64 = 15625 -> 8192
    (5000, "cuda", "bpr", 128),         # the smallest batch
])
def test_mf_picks_its_automatic_batch_by_device_and_loss(nnz, device, loss, batch):
    model = MF(loss=loss)
    assert model.auto_batch(SimpleNamespace(nnz=nnz), torch.device(device)) == batch


def test_an_automatic_batch_trains_at_the_scaled_rate_and_an_explicit_one_at_lr(small_data, monkeypatch):
    train, _ = random_split(small_data, test_frac=0.2, seed=0)
    monkeypatch.setattr(MF, "auto_batch", lambda self, train, device: 16384)
    auto = create_model("mf", factors=8, epochs=1, lr=0.003, refit=False, progress=False).fit(train)
    assert auto.lr_ == pytest.approx(0.006)  # 0.003 * sqrt(16384 / 4096)
    assert auto.sampler_.batch_size == 16384
    fixed = create_model("mf", factors=8, epochs=1, lr=0.003, batch_size=16384, refit=False,
                         progress=False).fit(train)
    assert fixed.lr_ == 0.003
