"""Our scoring endpoint against `mlflow models serve` on the same exported model, in one run.

    python bench/serving_latency.py [--items 10000,100000] [--users 20000] [--concurrency 1,4]
                            [--requests 2000] [--k 10]

For each catalogue size: trains an ALS model on generated data, exports it as the MLflow pyfunc
model of `recsys export`, starts both servers on 127.0.0.1 (one worker each), and sends the
same /recommend requests (random known users, top k, seen items excluded) from a pool of
keep-alive HTTP clients. Prints requests/s and p50/p99 latency, and ours / mlflow ratios.
Client and servers share this machine's cores, as they would in any one-box measurement.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.export import log_pyfunc  # noqa: E402
from recsys import Interactions, create_model  # noqa: E402
from recsys.data.synthetic import synthetic_log  # noqa: E402
from recsys.models.base import save_seen  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on port {port} not ready after {timeout} s")


def post_bytes(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(stream) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; returns the status."""
    status = int(stream.readline().split()[1])
    length = None
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("response without Content-Length")
    stream.read(length)
    return status


def hammer(port: int, path: str, bodies: list[bytes], concurrency: int) -> dict:
    """Send every body once from `concurrency` keep-alive clients; latency per request.

    The client is a bare socket (requests prepared in advance, no HTTP library), so as little
    as possible of the shared CPU goes to the load generator, as with wrk or hey."""
    requests = [post_bytes(path, b) for b in bodies]
    latencies = np.zeros(len(bodies))
    errors = []
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()

    def client() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        with sock, stream:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                start = time.perf_counter()
                sock.sendall(requests[i])
                status = read_response(stream)
                latencies[i] = time.perf_counter() - start
                if status != 200:
                    errors.append(status)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests on {path}: statuses {set(errors)}")
    return {"rps": len(bodies) / wall, "p50_ms": 1e3 * np.percentile(latencies, 50),
            "p99_ms": 1e3 * np.percentile(latencies, 99)}


def build(n_users: int, n_items: int, workdir: Path) -> tuple[Path, str, np.ndarray]:
    """Train ALS, save the model folder, log the pyfunc model; returns folder, pyfunc path, users."""
    log = synthetic_log(n_users, n_items, n_interactions=20 * n_users, seed=0)
    train = Interactions.from_frame(log)
    model = create_model("als", iterations=3).fit(train)
    folder = workdir / f"model-{n_items}"
    model.save(folder)
    save_seen(folder, train)
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns.db")
    mlflow.set_experiment("serving-bench")
    with mlflow.start_run():
        info = log_pyfunc(model, train)
    pyfunc = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(workdir / f"pyfunc-{n_items}"))
    return folder, pyfunc, train.user_map.ids


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="10000,100000")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    # the servers use their libraries' default threads (OpenBLAS for ours, torch for mlflow's)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_items in map(int, args.items.split(",")):
            folder, pyfunc, user_ids = build(args.users, n_items, Path(tmp))
            ours_port, mlflow_port = free_port(), free_port()
            servers = [
                start([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(folder),
                       "--port", str(ours_port)], env),
                start([sys.executable, "-m", "mlflow", "models", "serve", "-m", pyfunc, "-h", "127.0.0.1",
                       "-p", str(mlflow_port), "--env-manager", "local"], env),
            ]
            try:
                wait_ready(ours_port, "/readyz", servers[0])
                wait_ready(mlflow_port, "/ping", servers[1])
                users = rng.choice(user_ids, args.requests).tolist()
                ours = [json.dumps({"user_id": u, "k": args.k}).encode() for u in users]
                theirs = [json.dumps({"dataframe_split": {"columns": ["user_id"], "data": [[u]]},
                                      "params": {"k": args.k}}).encode() for u in users]
                for concurrency in map(int, args.concurrency.split(",")):
                    hammer(ours_port, "/recommend", ours[:200], concurrency)  # warm-up
                    hammer(mlflow_port, "/invocations", theirs[:200], concurrency)
                    a = hammer(ours_port, "/recommend", ours, concurrency)
                    b = hammer(mlflow_port, "/invocations", theirs, concurrency)
                    rows.append((n_items, concurrency, a, b))
                    print(f"items {n_items} concurrency {concurrency}: ours {a['rps']:.0f} req/s, "
                          f"mlflow {b['rps']:.0f} req/s", flush=True)
            finally:
                for proc in servers:
                    proc.terminate()
                    proc.wait(30)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.users} users, k={args.k}, {args.requests} requests per cell\n")
    print("| items | clients | ours req/s | mlflow req/s | req/s ratio | ours p50 ms | mlflow p50 ms "
          "| ours p99 ms | mlflow p99 ms | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_items, concurrency, a, b in rows:
        print(f"| {n_items} | {concurrency} | {a['rps']:.0f} | {b['rps']:.0f} | {a['rps'] / b['rps']:.1f}x "
              f"| {a['p50_ms']:.2f} | {b['p50_ms']:.2f} | {a['p99_ms']:.2f} | {b['p99_ms']:.2f} "
              f"| {a['p99_ms'] / b['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
