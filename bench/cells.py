"""Benchmark cells (data set, seed, model, ...) fitted one after another or in processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from recsys.models.base import coerce_params, get_model_class


def parse_model(spec: str, flags: Collection[str] = ()) -> tuple[str, tuple[str, dict]]:
    """'sgl nd=sgl:view=nd' -> (label, (registry name, params)); a bare name is its own label
    and the label may hold '=' ('GNOLR S=2=gnolr:scale=2'). A bench's pseudo-parameters in
    `flags` are given bare ('relmf:true_propensity') and come back as True."""
    head, _, params = spec.partition(":")
    label, _, name = head.rpartition("=")
    pairs = [p for p in params.split(",") if p]
    raw = dict(p.split("=", 1) for p in pairs if p not in flags)
    parsed = coerce_params(get_model_class(name), raw, model=name)
    return label or name, (name, parsed | {p: True for p in pairs if p in flags})


def run_cells(run: Callable[..., dict], cells: Sequence[tuple], args, jobs: int = 1,
              keep: Callable[[dict], None] | None = None) -> list[dict]:
    """[run(*cell, args) for cell in cells], in `jobs` processes when jobs > 1; `keep` sees
    each row as soon as it is done (e.g. to save a cut-short run). Rows come back in cell order."""
    rows: list[dict | None] = [None] * len(cells)

    def done(i: int, row: dict) -> None:
        rows[i] = row
        if keep is not None:
            keep(row)

    if jobs > 1:
        # spawn: forked children cannot use CUDA once the parent has touched it
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run, *cell, args): i for i, cell in enumerate(cells)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    else:
        for i, cell in enumerate(cells):
            done(i, run(*cell, args))
    return rows
