"""Every benchmark of bench/ in one go, on this machine, with one report of their ratios.

    python bench/run_all.py [--full] [--device cpu|cuda] [--only a,b] [--skip a,b]
        [--data ../shared/data/ml-100k] [--timeout 1800] [--out bench/results/run_all]

Runs each bench script in its own process (the GPU when present: `--device` defaults to
cuda if torch sees one), with small, quick settings by default and the scripts' real sizes
with `--full`. Each script's output goes to OUT/<name>.log; OUT/report.md has one row per
script (status, seconds) and every ratio its tables print (columns named "ratio" or
"speed-up"), then the tables themselves. A script that fails or runs past `--timeout` is
reported as such and the rest still run. A bench script not listed in BENCHES runs with its
defaults (plus --device when it takes one).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOVIELENS = ("../shared/data/ml-100k", "/work/shared/data/ml-100k", ".gpu_deps/ml-100k")


@dataclass(frozen=True)
class Bench:
    """How to run one script: arguments for a quick and for a full run ({device}, {data},
    {inter}: the MovieLens-100K folder and its .inter file, {tmp}: a scratch folder), and
    whether it takes --device."""

    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    device: bool = True
    full_cuda: tuple[str, ...] | None = None  # full settings on a GPU, when they differ


SMALL = ("--users", "3000", "--items", "1500", "--interactions", "40000")
BENCHES: dict[str, Bench] = {
    "eval_floor": Bench(
        quick=("--sizes", "80000:4000:2000", "--repeats", "1"),
        full=("--sizes", "80000:4000:2000,1000000:50000:10000"),
        full_cuda=("--sizes", "80000:4000:2000,1000000:50000:10000,20000000:1000000:100000")),
    "train_throughput": Bench(
        quick=("--users", "5000", "--items", "2000", "--interactions", "50000",
               "--batches", "16384"),
        full=("--users", "100000", "--items", "20000", "--interactions", "2000000",
              "--batches", "65536"),
        full_cuda=("--lightgcn-batches", "262144")),
    "scale": Bench(
        quick=("--sizes", "100000,300000", "--items", "5000", "--json", "{tmp}/scale.json"),
        full=("--sizes", "1000000,10000000", "--json", "{tmp}/scale.json"),
        full_cuda=("--sizes", "1000000,10000000,100000000", "--batch", "262144",
                   "--json", "{tmp}/scale.json")),
    "train_overhead": Bench(
        quick=(*SMALL, "--batches", "1024", "--epochs", "3", "--repeats", "1",
               "--valid-every", "off")),
    "baselines": Bench(
        quick=(*SMALL, "--repeats", "1"), full=("--movielens", "{data}"), device=False),
    "mnar": Bench(
        quick=("--biases", "1.0", "--seeds", "0", "--users", "1000", "--items", "500",
               "--interactions", "10000", "--model", "naive MF (bce)=mf:loss=bce,epochs=10",
               "--model", "UBPR=ubpr:epochs=10,warmup=0")),
    "ordinal": Bench(
        quick=("--data", "sim", "--seeds", "0", "--users", "1000", "--items", "500",
               "--interactions", "10000", "--model", "GNOLR (nested)=gnolr:epochs=10",
               "--model", "binary per level=gnolr:objective=binary,epochs=10"),
        full=("--ml100k", "{inter}")),
    "graph": Bench(
        quick=("--sets", "power-law", "--users", "2000", "--items", "1000", "--interactions",
               "20000", "--seeds", "0", "--model", "mf=mf:epochs=5",
               "--model", "lightgcn=lightgcn:epochs=5"),
        full=("--movielens", "{data}")),
    "foldin": Bench(quick=("--data", "{inter}", "--models", "als"), full=("--data", "{inter}")),
    "two_tower_ssl": Bench(
        quick=("--datasets", "simulated", "--seeds", "0", "--epochs", "3",
               "--models", "two_tower ssl=none,two_tower ssl=cfm"),
        full=("--data", "{data}")),
    "serving_latency": Bench(
        quick=("--items", "2000", "--users", "2000", "--concurrency", "1", "--requests", "200"),
        device=False),
    "llmrec": Bench(quick=("--data", "{data}", "--seeds", "0", "--skip-llm", "--json", "{tmp}/llmrec.json"),
                    full=("--data", "{data}", "--json", "{tmp}/llmrec.json")),
    "dsl": Bench(
        quick=("--movielens", "{data}", "--models", "mf", "--densities", "1.0,0.2",
               "--param", "epochs=5"),
        full=("--movielens", "{data}", "--serving")),
    "recbole_eval": Bench(  # skips unless $RECBOLE_PYTHON names a python with recbole
        quick=("--movielens", "{data}", "--repeats", "1", "--batches", "4096"),
        full=("--movielens", "{data}", "--generated", "50000,10000,1000000"), device=False),
    "ddp_valid": Bench(
        quick=("--movielens", "{data}", "--param", "epochs=4", "--param", "factors=16"),
        full=("--movielens", "{data}")),
    "tuning": Bench(
        quick=("--movielens", "{data}", "--models", "als", "--trials", "3"),
        full=("--movielens", "{data}")),
    "ddp": Bench(
        quick=("--nproc", "1,2", "--users", "20000", "--items", "5000", "--interactions",
               "200000", "--epochs", "2", "--runs", "mf=8192", "--out", "{tmp}/ddp.json"),
        full=("--out", "{tmp}/ddp.json")),
}
ORDER = list(BENCHES)
NOT_BENCHES = {"run_all", "cells"}  # this runner and the module the benches share

def default_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def movielens(given: str | None) -> Path | None:
    for candidate in (given, *MOVIELENS) if given else MOVIELENS:
        path = (ROOT / candidate) if not Path(candidate).is_absolute() else Path(candidate)
        if (path / "ml-100k.inter").exists():
            return path
    return None


def takes_device(script: Path) -> bool:
    return "--device" in script.read_text()


def command(name: str, script: Path, args, tmp: Path, data: Path | None) -> list[str]:
    bench = BENCHES.get(name)
    if bench is None:
        extra, device = (), takes_device(script)
    else:
        extra, device = (bench.full if args.full else bench.quick), bench.device
        if args.full and args.device.startswith("cuda") and bench.full_cuda is not None:
            extra = bench.full_cuda
    fill = {"device": args.device, "tmp": str(tmp),
            "data": str(data or ""), "inter": str(data / "ml-100k.inter") if data else ""}
    argv = [a.format(**fill) for a in extra]
    if device:
        argv = ["--device", args.device, *argv]
    return [sys.executable, str(script), *argv]


RATIO = re.compile(r"ratio|speed-?up", re.IGNORECASE)
MEASURE = re.compile(r"\bs\b|/s|s/|seconds|@")
NUMBER = re.compile(r"[-+]?\d*\.?\d+(e[-+]?\d+)?")


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables in `text`, as rows of cells (header first, separator dropped)."""
    found, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def ratios(found: list[list[list[str]]]) -> list[tuple[str, str, str]]:
    """(row label, column, value) of every cell under a header that names a ratio."""
    out = []
    for table in found:
        header, rows = table[0], table[1:]
        cols = [i for i, h in enumerate(header) if RATIO.search(h)]
        if not cols:
            continue
        names = {i: f"{header[i - 1]} {header[i]}" if header[i].lower() == "ratio" and i else header[i]
                 for i in cols}
        for row in rows:
            # the row's settings: leading cells, less the measurements before the ratio
            label = " / ".join(c for j, c in enumerate(row[:min(cols[0], 4)]) if c and (
                j == 0 or not (MEASURE.search(header[j]) and NUMBER.fullmatch(c.replace(",", "")))))
            for i in cols:
                if i < len(row) and row[i] not in ("", "nan", "-"):
                    out.append((label, names[i], row[i]))
    return out


def run(name: str, cmd: list[str], timeout: float, log: Path) -> tuple[str, float, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        status = f"timed out after {timeout:.0f} s"
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.perf_counter() - start
    write(log, f"$ {' '.join(cmd)}\n\n{out}\n--- stderr ---\n{err}")
    if status != "ok":
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["(no error output)"]
        status += f": {tail[0][:200]}"
    return status, seconds, out


def write(path: Path, text: str) -> None:
    """Write atomically: a temporary file beside `path`, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    Path(f.name).replace(path)


def report(results: list[tuple[str, str, float, str, list[str]]], args) -> str:
    mode = "full" if args.full else "quick"
    lines = [f"# Benchmarks ({mode} settings, device {args.device})", "",
             "| bench | status | seconds | ratios (row: column = value) |", "|---|---|---|---|"]
    for name, status, seconds, out, _ in results:
        found = ratios(tables(out))
        cell = "<br>".join(f"{label}: {col} = {value}" for label, col, value in found) or "-"
        lines.append(f"| {name} | {status.replace('|', '/')} | {seconds:.0f} | {cell} |")
    for name, status, _, out, cmd in results:
        shown = " ".join(["python", f"bench/{name}.py", *cmd[2:]])
        lines += ["", f"## {name}", "", f"`{shown}`", ""]
        found = tables(out)
        if not found:
            lines.append(f"(no table; {status})")
        for table in found:
            lines.append("| " + " | ".join(table[0]) + " |")
            lines.append("|" + "---|" * len(table[0]))
            lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the scripts' real sizes (long)")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    ap.add_argument("--only", default="", help="comma-separated bench names to run")
    ap.add_argument("--skip", default="", help="comma-separated bench names to leave out")
    ap.add_argument("--data", help="the MovieLens-100K folder (default: the first found of "
                                   + ", ".join(MOVIELENS) + ")")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "run_all")
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    args = ap.parse_args()
    args.device = args.device or default_device()
    data = movielens(args.data)
    scripts = {p.stem: p for p in sorted((ROOT / "bench").glob("*.py"))
               if p.stem not in NOT_BENCHES and not p.stem.startswith("_")}
    names = [n for n in ORDER if n in scripts] + [n for n in scripts if n not in BENCHES]
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(scripts)
    if unknown:
        ap.error(f"no such bench: {', '.join(sorted(unknown))} (have {', '.join(names)})")
    names = [n for n in names if (not only or n in only) and n not in skip]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cmd = command(name, scripts[name], args, Path(tmp), data)
            if args.list:
                print(" ".join(cmd))
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
            status, seconds, out = run(name, cmd, args.timeout, args.out / f"{name}.log")
            print(f"    {status} in {seconds:.0f} s", flush=True)
            results.append((name, status, seconds, out, cmd))
            write(args.out / "report.md", report(results, args))  # kept current as scripts finish
    if results:
        print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
