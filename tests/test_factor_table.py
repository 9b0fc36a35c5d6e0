"""Factor tables: CSR held only when smaller, the bytes CSR predicts, and every read (scores,
rows, Gram matrix, norms) equal to the same computation on the dense table."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.factor_table import FactorTable, csr_bytes


def sparse_table(rows, cols, density, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(rows, cols)).astype(np.float32)
    dense[rng.random((rows, cols)) >= density] = 0
    return dense


@pytest.mark.parametrize("density, held_sparse", [(0.1, True), (0.2, True), (0.45, True),
                                                  (0.55, False), (1.0, False)])
def test_csr_is_held_only_when_smaller_and_holds_the_predicted_bytes(density, held_sparse):
    dense = sparse_table(300, 16, density)
    table = FactorTable.held(sp.csr_matrix(dense))
    nnz = int((dense != 0).sum())
    # float32 value + int32 column per non-zero, 301 int32 row pointers; dense: 4 bytes each
    predicted = nnz * 8 + 301 * 4
    assert csr_bytes(300, nnz) == predicted
    assert table.is_sparse == (predicted < dense.size * 4) == held_sparse
    assert table.nbytes == (predicted if held_sparse else dense.size * 4)
    assert np.array_equal(table.dense().numpy(), dense)
    assert FactorTable.held(torch.from_numpy(dense)).is_sparse is False  # dense stays dense


def test_csr_bytes_switch_to_64_bit_indices_past_2_31_values():
    assert csr_bytes(10, 2**31) == 2**31 * 12 + 11 * 8


@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_reads_match_the_dense_reference(density):
    items = sparse_table(50, 8, density, seed=1)
    queries = np.random.default_rng(2).normal(size=(7, 8)).astype(np.float32)
    index = np.array([4, 0, 4, 49])
    sparse, dense = FactorTable(sp.csr_matrix(items)), FactorTable(torch.from_numpy(items))
    for table in (sparse, dense):
        assert table.shape == (50, 8) and len(table) == 50
        assert np.allclose(table.scores(queries).numpy(), queries @ items.T, atol=1e-5)
        assert np.allclose(table.scores(torch.from_numpy(queries)).numpy(), queries @ items.T,
                           atol=1e-5)
        assert np.array_equal(table.dense_rows(index).numpy(), items[index])
        assert table.rows(index).is_sparse == table.is_sparse
        assert np.allclose(table.rows(index).scores(queries).numpy(), queries @ items[index].T,
                           atol=1e-5)
        gram = items.astype(np.float64).T @ items.astype(np.float64)
        assert table.gram().dtype == torch.float64 and np.allclose(table.gram().numpy(), gram)
        assert np.allclose(table.norms().numpy(), np.linalg.norm(items, axis=1), rtol=1e-6)
    assert sparse.scores(queries).is_contiguous()


def test_large_blocks_score_a_csr_table_in_dense_chunks(monkeypatch):
    items = sparse_table(50, 8, 0.2, seed=5)
    queries = np.random.default_rng(6).normal(size=(5, 8)).astype(np.float32)
    table = FactorTable(sp.csr_matrix(items))
    monkeypatch.setattr("recsys.factor_table.CHUNK_ROWS", 16)  # 4 chunks, the last of 2 rows
    for chunked_from in (1, 6):  # 5 queries: chunked, then through the CSR product
        monkeypatch.setattr("recsys.factor_table.DENSE_CHUNKS_FROM", chunked_from)
        scores = table.scores(queries)
        assert scores.shape == (5, 50) and scores.is_contiguous()
        assert np.allclose(scores.numpy(), queries @ items.T, atol=1e-5)


def test_an_empty_row_scores_zero_and_has_norm_zero():
    items = sparse_table(5, 4, 1.0)
    items[2] = 0
    table = FactorTable(sp.csr_matrix(items))
    assert table.scores(np.ones((1, 4), np.float32))[0, 2] == 0
    assert table.norms()[2] == 0


def test_the_gram_matrix_sums_blocks_of_rows(monkeypatch):
    items = sparse_table(50, 6, 0.3, seed=4)
    monkeypatch.setattr("recsys.factor_table.GRAM_ROWS", 7)  # 8 blocks, the last of 1 row
    reference = items.astype(np.float64).T @ items.astype(np.float64)
    for table in (FactorTable(sp.csr_matrix(items)), FactorTable(torch.from_numpy(items))):
        assert np.allclose(table.gram().numpy(), reference, rtol=1e-12)


def test_the_gram_matrix_is_kept_until_a_dense_table_changes_in_place():
    items = torch.from_numpy(sparse_table(20, 4, 1.0))
    table = FactorTable(items)
    first = table.gram()
    assert table.gram() is first
    items.mul_(2)  # e.g. a parameter that training goes on updating
    assert torch.allclose(table.gram(), 4 * first)
