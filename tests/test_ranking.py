"""ranking.top_k: one tie rule (equal scores -> lower item index), exact on every device."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.ranking import block_rows, mask_rows, top_k, top_k_unsure

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def reference(row: np.ndarray, k: int) -> np.ndarray:
    """Sort by (score descending, index ascending): the rule, written as plainly as possible."""
    return np.array(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k], dtype=np.int64)


def tied_cases(seed: int, count: int):
    """(scores [rows, n], k): small integer scores (mostly ties), a fifth masked (-inf), some
    -0.0 (equal to 0.0), and k from 1 to beyond n."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        rows, n = rng.integers(1, 6), rng.integers(1, 40)
        k = int(rng.integers(1, 45))
        scores = rng.integers(-3, 4, (rows, n)).astype(np.float32)
        scores[rng.random((rows, n)) < 0.2] = -np.inf
        scores[rng.random((rows, n)) < 0.1] = -0.0
        yield scores, k


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_matches_the_reference_on_tied_and_masked_scores(device):
    for scores, k in tied_cases(0, 300):
        rows, n = scores.shape
        items, values = top_k(torch.from_numpy(scores).to(device), k)
        assert items.shape == (rows, min(k, n)) and items.device.type == device
        for r in range(rows):
            expected = reference(scores[r], k)
            assert items[r].cpu().tolist() == expected.tolist()
            assert values[r].cpu().tolist() == scores[r, expected].tolist()


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_unsure_flags_exactly_the_rows_cut_inside_a_tie_group(device):
    for scores, k in tied_cases(2, 200):
        rows, n = scores.shape
        items, values, unsure = top_k_unsure(torch.from_numpy(scores).to(device), k)
        assert items.shape == (rows, min(k, n)) and unsure.shape == (rows,)
        for r in range(rows):
            ordered = np.sort(scores[r])[::-1]
            cut = k < n and ordered[k] == ordered[k - 1]
            assert bool(unsure[r]) == cut
            if not cut:  # every other row already follows the rule
                assert items[r].cpu().tolist() == reference(scores[r], k).tolist()
            # the scores are right and best first either way
            assert values[r].cpu().tolist() == ordered[:min(k, n)].tolist()


def test_block_rows_follow_the_memory_cap(monkeypatch):
    monkeypatch.setattr("recsys.ranking.MAX_BLOCK_SCORES", 1000)
    assert block_rows(10) == 100 and block_rows(3000) == 1 and block_rows(0) == 1000
    monkeypatch.setattr("recsys.ranking._available_host_memory", lambda: 16 * 4 * 500)
    assert block_rows(10) == 50  # a quarter of the memory at 16 bytes per score
    # a small job is one block, without asking for the free memory
    monkeypatch.setattr("recsys.ranking._available_host_memory", lambda: 1 / 0)
    assert block_rows(100, rows=3) == 3 and block_rows(10, rows=0) == 1  # within the cap (1000)


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_on_a_popularity_row_over_a_large_catalogue(device):
    """pop scores: a few distinct counts over many items, so k cuts through a tie group."""
    rng = np.random.default_rng(1)
    popularity = rng.poisson(2, 50_000).astype(np.float32)
    scores = torch.from_numpy(np.stack([popularity, popularity[::-1].copy()])).to(device)
    items, _ = top_k(scores, 1000)
    for r in range(2):
        assert items[r].cpu().tolist() == reference(scores[r].cpu().numpy(), 1000).tolist()


def test_mask_rows_sets_the_stored_entries_to_minus_infinity():
    scores = torch.zeros(3, 4)
    mask_rows(scores, sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 5, 0, 0]])))
    assert torch.isinf(scores).nonzero().tolist() == [[0, 0], [0, 3], [2, 1]]
