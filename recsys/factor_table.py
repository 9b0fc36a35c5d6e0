"""Factor tables as ranking holds them: dense, or scipy CSR where that takes less memory.

A model trained at `density` < 1 (recsys.sparsity) has mostly-zero factor tables. Its folder
stores them as CSR (recsys.models.persist), and loaded they stay CSR when CSR (float32 values,
int32 column indices and row pointers: 8 bytes a non-zero) is smaller than the dense float32
table, i.e. below about half non-zeros, so a server holds what the sparsity saves. Every
consumer of factors reads them through this one class: scores of a block of dense query
vectors against the table (ranking, `/score`), dense rows (a block of users, the items of a
new user's history), the Gram matrix (fold-in) and row norms (`/similar`). Query vectors are
always dense: a block of users is densified (rows x dimensions, small) and multiplied with the
item table: for a sparse table and a few queries (a serving request) with scipy's CSR product
(single-threaded, and at density 0.2 and below no slower than a one-thread dense product,
bench/RESULTS.md "dsl"), for a large block (evaluation, batch jobs) with BLAS on dense chunks
of the table, as fast as a dense table and as multi-threaded. A table on an accelerator is
always dense (training output; a sparse table is densified to move there).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

INT32_MAX = np.iinfo(np.int32).max
GRAM_ROWS = 16384  # rows made dense (float64) at a time for the Gram matrix: 8 MB at d = 64
# a block of at least this many queries multiplies a CSR table in dense chunks of CHUNK_ROWS
# rows (BLAS, multi-threaded where numpy's BLAS is): the chunk's densifying is shared by the
# block, and a block ranks as fast as with the dense table; fewer queries use the CSR product
DENSE_CHUNKS_FROM = 64
CHUNK_ROWS = 16384


def csr_bytes(rows: int, nnz: int) -> int:
    """Bytes of a float32 CSR matrix with `rows` rows and `nnz` stored values: values, column
    indices and rows + 1 pointers, indices int32 (int64 past 2^31 - 1 values, as scipy does)."""
    index = 4 if nnz <= INT32_MAX else 8
    return nnz * (4 + index) + (rows + 1) * index


class FactorTable:
    """Rows of factors [n, d] (one per user or item), float32: a torch tensor (CPU or an
    accelerator) or a scipy CSR matrix (CPU). Immutable: build a new table to change it."""

    def __init__(self, data: torch.Tensor | sp.csr_matrix):
        if isinstance(data, sp.spmatrix | sp.sparray):
            data = sp.csr_matrix(data, dtype=np.float32)
        else:
            data = torch.as_tensor(data, dtype=torch.float32).detach().contiguous()
        self.data = data
        self._gram: tuple[int | None, torch.Tensor] | None = None
        self._mean_norm: tuple[tuple, float] | None = None

    @classmethod
    def held(cls, data: torch.Tensor | np.ndarray | sp.csr_matrix) -> FactorTable:
        """The table of `data` in the form that takes fewer bytes: a sparse matrix stays CSR if
        `csr_bytes` is below the dense size, else it is densified; dense data stays dense."""
        if sp.issparse(data):
            rows, cols = data.shape
            if csr_bytes(rows, data.nnz) >= rows * cols * 4:
                return cls(torch.from_numpy(data.toarray().astype(np.float32, copy=False)))
        return cls(data)

    # ---- what it is --------------------------------------------------------------------------
    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.data)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.is_sparse else self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes held: values, indices and pointers of a CSR table, the elements of a dense one."""
        if self.is_sparse:
            return self.data.data.nbytes + self.data.indices.nbytes + self.data.indptr.nbytes
        return self.data.numel() * self.data.element_size()

    # ---- reading it --------------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The whole table as a dense [n, d] tensor: the held tensor itself, or for CSR a new
        one (n x d x 4 bytes: what a sparse table exists to avoid; consumers that only score,
        rank or fold in never call it)."""
        return torch.from_numpy(self.data.toarray()) if self.is_sparse else self.data

    def rows(self, index: np.ndarray) -> FactorTable:
        """The sub-table of rows `index` (indices into this table, repeats allowed), same form."""
        index = np.asarray(index, dtype=np.int64)
        if self.is_sparse:
            return FactorTable(self.data[index])
        return FactorTable(self.data[torch.as_tensor(index, device=self.data.device)])

    def dense_rows(self, index: np.ndarray) -> torch.Tensor:
        """Rows `index` as a dense float32 tensor [len(index), d] on the table's device."""
        return self.rows(index).dense()

    def scores(self, queries: torch.Tensor | np.ndarray) -> torch.Tensor:
        """queries [b, d] (dense) times the table transposed: scores [b, n] on the table's
        device. On the CPU through numpy: BLAS for a dense table; for a CSR table, scipy's
        product (one pass over the stored values per query) for fewer than DENSE_CHUNKS_FROM
        queries, else BLAS on dense chunks of CHUNK_ROWS rows (CHUNK_ROWS x d floats at a
        time). On an accelerator one torch product."""
        if not self.is_sparse and self.data.device.type != "cpu":
            return torch.as_tensor(queries, device=self.data.device, dtype=torch.float32) @ self.data.T
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().cpu().numpy()
        queries = np.asarray(queries, dtype=np.float32)
        if not self.is_sparse:
            return torch.from_numpy(queries @ self.data.numpy().T)
        if len(queries) < DENSE_CHUNKS_FROM:  # (V q')'
            return torch.from_numpy(np.ascontiguousarray((self.data @ queries.T).T))
        out = np.empty((len(queries), len(self)), dtype=np.float32)
        for start in range(0, len(self), CHUNK_ROWS):  # each product written in place
            chunk = self.data[start:start + CHUNK_ROWS].toarray()
            np.matmul(queries, chunk.T, out=out[:, start:start + len(chunk)])
        return torch.from_numpy(out)

    def gram(self) -> torch.Tensor:
        """V'V [d, d] in float64 on the table's device, summed over blocks of GRAM_ROWS rows
        made dense (no float64 copy of the whole table). Computed once (every fold-in request
        needs it; at 100K items x 64 it costs about 50 ms on one core) and again only if a
        dense table's tensor was changed in place (torch's version counter: a table built on
        a parameter that training still moves). Do not modify the result."""
        version = None if self.is_sparse else self.data._version
        if self._gram is None or self._gram[0] != version:
            d = self.shape[1]
            gram = torch.zeros(d, d, dtype=torch.float64, device=self.device)
            for start in range(0, len(self), GRAM_ROWS):
                block = self.data[start:start + GRAM_ROWS]
                block = torch.from_numpy(block.toarray()) if self.is_sparse else block
                gram += block.double().T @ block.double()
            self._gram = (version, gram)
        return self._gram[1]

    def mean_norm(self, columns: int) -> float:
        """Mean of `norms(columns)`, computed once like `gram` (every fold-in of a model with
        item biases reads it)."""
        key = (None if self.is_sparse else self.data._version, columns)
        if self._mean_norm is None or self._mean_norm[0] != key:
            self._mean_norm = (key, float(self.norms(columns).double().mean()))
        return self._mean_norm[1]

    def norms(self, columns: int | None = None) -> torch.Tensor:
        """Euclidean norm of each row [n] over its first `columns` columns (all: None),
        float32, on the table's device."""
        data = self.data if columns is None else self.data[:, :columns]
        if self.is_sparse:
            squares = np.asarray(data.multiply(data).sum(axis=1), dtype=np.float64)
            return torch.from_numpy(np.sqrt(squares.ravel()).astype(np.float32))
        return torch.linalg.vector_norm(data, dim=1)
