"""ranking.top_k: one tie rule (equal scores -> lower item index), exact on every device."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.ranking import mask_rows, top_k

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def reference(row: np.ndarray, k: int) -> np.ndarray:
    """Sort by (score descending, index ascending): the rule, written as plainly as possible."""
    return np.array(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k], dtype=np.int64)


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_matches_the_reference_on_tied_and_masked_scores(device):
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows, n = rng.integers(1, 6), rng.integers(1, 40)
        k = int(rng.integers(1, 45))
        scores = rng.integers(-3, 4, (rows, n)).astype(np.float32)  # mostly ties
        scores[rng.random((rows, n)) < 0.2] = -np.inf  # masked items
        scores[rng.random((rows, n)) < 0.1] = -0.0  # equal to 0.0
        items, values = top_k(torch.from_numpy(scores).to(device), k)
        assert items.shape == (rows, min(k, n)) and items.device.type == device
        for r in range(rows):
            expected = reference(scores[r], k)
            assert items[r].cpu().tolist() == expected.tolist()
            assert values[r].cpu().tolist() == scores[r, expected].tolist()


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
