"""Serving memory and latency of a model folder with its factors held as loaded (CSR where that
is smaller) or densified: one `recsys serve`-equivalent process per case, measured from
outside (bench/dsl.py --serving, --serving-generated).

Each case starts a fresh server process on 127.0.0.1 (one thread for BLAS and torch) and
records: seconds to ready, the factor bytes it holds (`/readyz` factor_bytes), its resident
memory (VmRSS) once loaded with every factor read once (dense tensors loaded from a folder are
mapped from the file and resident only once read), after the requests (also after each kind
of request, in the CSV), its peak (VmHWM), and the latency of sequential keep-alive requests
(p50/p99 ms), each request sent to both servers in turn: `/recommend` of known users (k=20,
seen items excluded), `/recommend` of a new user folded in from a 20-item history, `/score`
of 100 items, `/similar` (k=20).

    python bench/_sparse_serving.py serve FOLDER PORT [--dense]   (the server process)
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys import Interactions, create_model
from recsys.data.idmap import IdMap

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def serve(folder: str, port: int, dense: bool) -> None:
    """Run the endpoint on `folder` (the server process); `dense` densifies the factors
    after loading, as every server did before factor tables could stay sparse. Every factor
    is read once before serving (`touch`), as a server that has answered every user has."""
    import uvicorn

    from recsys.store import open_model
    from serving import Settings, create_app
    from serving.engine import Engine

    torch.set_num_threads(1)
    model, seen, version = open_model(folder)
    if dense:
        model._set_factors(model.user_factors_, model.item_factors_)
    engine = Engine(model, seen, version=version, source=folder)
    for table in engine.ranker.factors:
        touch(table)
    settings = Settings(model=folder, access_log=False, max_k=1000)
    # the client alternates between two servers: a connection may idle for seconds on a busy
    # machine, longer than uvicorn's default keep-alive of 5 s
    uvicorn.run(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning",
                timeout_keep_alive=600)


def touch(table) -> float:
    """Read every page a factor table holds (a dense table loaded from a folder is mapped
    from the file and resident only once read)."""
    data = table.data
    if table.is_sparse:
        return float(data.data.sum()) + float(data.indices.sum()) + float(data.indptr.sum())
    return float(data.sum())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of process `pid`, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body=None) -> tuple[int, dict, float]:
        data = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        self.conn.request(method, path, data, {"content-type": "application/json"})
        response = self.conn.getresponse()
        text = response.read()
        return response.status, json.loads(text), time.perf_counter() - start


def latencies(clients: list[Client], requests: list[tuple[str, str, dict | None]]
              ) -> list[dict[str, float]]:
    """p50 and p99 ms of each client's server for `requests` sent one after another, each
    request to every server in turn (the order alternating), so that the servers share the
    same moments of a busy machine; 5 warm-up requests first."""
    for method, path, body in requests[:5]:
        for client in clients:
            client.call(method, path, body)
    times = [[] for _ in clients]
    for i, (method, path, body) in enumerate(requests):
        order = range(len(clients)) if i % 2 == 0 else reversed(range(len(clients)))
        for c in order:
            status, answer, seconds = clients[c].call(method, path, body)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}: {answer}")
            times[c].append(seconds)
    return [{"p50_ms": 1e3 * float(np.percentile(t, 50)),
             "p99_ms": 1e3 * float(np.percentile(t, 99))} for t in times]


def workload(users: np.ndarray, items: np.ndarray, n: int, seed: int = 0) -> dict[str, list]:
    """Requests per endpoint: n known-user /recommend, n // 4 of each other kind."""
    rng = np.random.default_rng(seed)
    pick = lambda ids, size: [v.item() for v in rng.choice(ids, size)]  # noqa: E731
    return {
        "recommend": [("POST", "/recommend", {"user_id": u, "k": 20}) for u in pick(users, n)],
        "fold_in": [("POST", "/recommend", {"user_id": "new user", "k": 20,
                                            "history": pick(items, 20)}) for _ in range(n // 4)],
        "score": [("POST", "/score", {"user_id": u, "item_ids": pick(items, 100)})
                  for u in pick(users, n // 4)],
        "similar": [("GET", f"/similar/{i}?k=20", None) for i in pick(items, n // 4)],
    }


def start(folder: Path, dense: bool) -> tuple[subprocess.Popen, int, float]:
    """A server process on `folder` (factors as loaded, or densified): (process, port,
    seconds until it answered /readyz)."""
    port = free_port()
    cmd = [sys.executable, __file__, "serve", str(folder), str(port), *(["--dense"] if dense else [])]
    begin = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {folder} exited with {proc.returncode}")
        try:
            if Client(port).call("GET", "/readyz")[0] == 200:
                return proc, port, time.perf_counter() - begin
        except OSError:
            pass
        time.sleep(0.2)


def compare(folder: Path, requests: dict[str, list]) -> list[dict]:
    """Serve `folder` with the factors as loaded and densified (one process each, started
    one after the other), then measure both on the same requests (`latencies`)."""
    procs, rows = [], []
    try:
        for dense in (False, True):
            proc, port, ready_s = start(folder, dense)
            procs.append(proc)
            ready = Client(port).call("GET", "/readyz")[1]
            rows.append({"held": "dense" if dense else "as loaded", "ready_s": ready_s,
                         "factor_mb": ready["factor_bytes"] / 2**20, "port": port,
                         **{f"{k}_loaded_mb": v for k, v in memory_mb(proc.pid).items()}})
        clients = [Client(row.pop("port")) for row in rows]
        for name, batch in requests.items():
            for row, proc, measured in zip(rows, procs, latencies(clients, batch), strict=True):
                row.update({f"{name}_{k}": v for k, v in measured.items()})
                row[f"{name}_rss_mb"] = memory_mb(proc.pid)["VmRSS"]
        for row, proc in zip(rows, procs, strict=True):
            row.update({f"{k}_mb": v for k, v in memory_mb(proc.pid).items()})
        return rows
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


def generated_folder(n_users: int, n_items: int, dim: int, density: float, root: Path,
                     seed: int = 0) -> Path:
    """A model folder of random mf factors at `density` (each entry kept with that
    probability), integer ids, and one seen item per user."""
    rng = np.random.default_rng(seed)
    tables = []
    for n in (n_users, n_items):
        table = rng.standard_normal((n, dim), dtype=np.float32) / np.float32(dim**0.5)
        table[rng.random((n, dim), dtype=np.float32) >= density] = 0
        tables.append(torch.from_numpy(table))
    model = create_model("mf", factors=dim)
    users, items = IdMap(np.arange(n_users)), IdMap(np.arange(n_items))
    seen = Interactions(sp_one_per_row(n_users, n_items, rng), users, items)
    model._start_fit(seen)
    model._set_factors(*tables)
    del tables
    folder = root / f"generated-{density}"
    model.save(folder, seen=seen)
    return folder


def sp_one_per_row(rows: int, cols: int, rng: np.random.Generator):
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(rows, np.float32), rng.integers(0, cols, rows),
                          np.arange(rows + 1)), shape=(rows, cols))


def generated(n_users: int, n_items: int, dim: int, densities: list[float], n_requests: int
              ) -> list[dict]:
    """`compare` on generated folders of each density."""
    rows = []
    requests = workload(np.arange(n_users), np.arange(n_items), n_requests)
    with tempfile.TemporaryDirectory() as tmp:
        for density in densities:
            folder = generated_folder(n_users, n_items, dim, density, Path(tmp))
            for row in compare(folder, requests):
                rows.append({"data": f"{n_users}x{n_items}x{dim}", "density": density, **row})
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(folder)
    return rows


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2], int(sys.argv[3]), "--dense" in sys.argv[4:])
