"""Data-parallel speed-up: epoch time of `mf` and `lightgcn` in N processes against one.

    python bench/ddp.py [--device cuda] [--nproc 1,2]
        [--users 1000000 --items 200000 --interactions 10000000] [--epochs 4]
        [--runs mf=65536,mf=262144,lightgcn=262144] [--out bench/ddp.json]

One generated power-law log (`synthetic_log`, drawn on `--device`) is shared by every run.
For each process count the models are fitted through the training template exactly as
`recsys train --nproc N` fits them (launched by `recsys.distributed.launch`; 1 process takes
the ordinary one-process path), with the same global batch, without validation (the
comparison is of training steps), 64 factors, `--epochs` epochs. Reported per model and
process count: the median epoch time over epochs 2.. (the first carries one-off work:
membership bitset, allocator and communicator warm-up), pairs per second, the speed-up over
one process and the final training loss (the runs train the same model, so it must agree).
On CPU every process uses gloo and the cores are shared among the processes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from recsys import Interactions, create_model, distributed  # noqa: E402
from recsys.data.synthetic import synthetic_log  # noqa: E402

FACTORS = 64


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--nproc", default="1,2")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--interactions", type=int, default=10_000_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--runs", default="mf=65536,mf=262144,lightgcn=262144",
                   help="MODEL=GLOBAL_BATCH, comma-separated")
    p.add_argument("--out", default="bench/ddp.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a folder: run one launched rank
    return p.parse_args(argv)


def generate(args: argparse.Namespace) -> Interactions:
    start = time.perf_counter()
    frame = synthetic_log(args.users, args.items, args.interactions, seed=0,
                          chunk_users=8192, device=args.device)
    data = Interactions.from_frame(frame)
    print(f"data: {data.n_users} users, {data.n_items} items, {data.nnz} pairs "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    return data


def worker(folder: Path) -> None:
    """One rank: fit each model, rank 0 writes its epoch history."""
    spec = json.loads((folder / "spec.json").read_text())
    with open(folder / "data.pkl", "rb") as f:
        data = pickle.load(f)
    results = []
    for name, batch in spec["runs"]:
        model = create_model(name, factors=FACTORS, epochs=spec["epochs"], batch_size=batch,
                             valid_frac=0.0, refit=False, progress=False, device=spec["device"])
        model.fit(data)
        results.append(model.history_)
    if distributed.is_main():
        (folder / f"result{spec['nproc']}.json").write_text(json.dumps(results))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(Path(args.worker))
        return
    counts = [int(n) for n in args.nproc.split(",")]
    runs = [(name, int(batch)) for name, batch in (r.split("=") for r in args.runs.split(","))]
    data = generate(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with open(folder / "data.pkl", "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        for nproc in counts:
            spec = {"runs": runs, "epochs": args.epochs, "device": args.device,
                    "nproc": nproc}
            (folder / "spec.json").write_text(json.dumps(spec))
            distributed.check_nproc(nproc, torch.device(args.device))
            distributed.launch(nproc, [__file__, "--worker", str(folder)])
            history = json.loads((folder / f"result{nproc}.json").read_text())
            for (name, batch), epochs in zip(runs, history, strict=True):
                seconds = statistics.median(e["seconds"] for e in epochs[1:] or epochs)
                rows.append({"model": name, "nproc": nproc, "batch": batch,
                             "epoch_s": seconds, "pairs_per_s": data.nnz / seconds,
                             "final_loss": epochs[-1]["loss"]})
    one = {(r["model"], r["batch"]): r["epoch_s"] for r in rows if r["nproc"] == 1}
    for r in rows:
        base = one.get((r["model"], r["batch"]))
        r["speedup"] = base / r["epoch_s"] if base else None
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    report = {"device": device, "users": data.n_users, "items": data.n_items, "pairs": data.nnz,
              "factors": FACTORS, "epochs": args.epochs, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{device}: {data.n_users} users x {data.n_items} items, {data.nnz} pairs, "
          f"{FACTORS} factors")
    print("| model | batch | processes | epoch s | pairs/s | speed-up | final loss |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["model"], r["batch"], r["nproc"])):
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        print(f"| {r['model']} | {r['batch']} | {r['nproc']} | {r['epoch_s']:.3f} | "
              f"{r['pairs_per_s']:.3g} | {speedup} | {r['final_loss']:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
