"""Per-epoch cost of the training template against a bare torch BPR loop, same batch size.

    python bench/train_overhead.py [--device cpu|cuda] [--batches 1024,65536]
        [--users 20000 --items 8000 --interactions 400000] [--epochs 10] [--repeats 3]
        [--valid-every off,1,5] [--clock wall|process]

Both sides train the same model on the same pairs: embeddings (64 factors), BPR loss with
one uniformly drawn negative per positive, an L2 penalty, Adam. The bare loop is what one
would write by hand (a permutation per epoch, slices, no host sync per step). The template
side is a TorchRecommender family doing exactly that, fitted through the full template
(holdout, sampler, validation of NDCG@20 on up to 10000 users every `--valid-every`
epochs, or none with `off`, early-stopping bookkeeping, loss accumulation, hooks, export;
progress bar off). `mf` is the shipped family (its sampler also redraws negatives that are
positives). Reported: seconds per epoch (an epoch's training and, when due, its validation,
averaged over the epochs of a fit), median over interleaved repeats, the ratio template /
bare, and the template's one-off work per fit (holdout, sampler, validator, export).

`--clock process` counts the CPU time of this process instead of wall time: on a machine
shared with other jobs it is the steadier measure (CPU only, with one thread).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from recsys import Interactions, create_model  # noqa: E402
from recsys.data.sampling import PairSampler  # noqa: E402
from recsys.data.split import holdout  # noqa: E402
from recsys.data.synthetic import synthetic_log  # noqa: E402
from recsys.losses import bpr_loss  # noqa: E402
from recsys.models.mf import Embeddings  # noqa: E402
from recsys.models.torch_model import TorchRecommender  # noqa: E402

FACTORS, REG, LR = 64, 0.03, 0.002


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bpr_batch_loss(module: Embeddings, users, pos, neg) -> torch.Tensor:
    u, i, j = module.users(users), module.items(pos), module.items(neg)
    reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / (2 * len(users))
    return bpr_loss((u * i).sum(-1), (u * j).sum(-1)).mean() + REG * reg


def bare_epochs(data: Interactions, batch: int, epochs: int, device: torch.device, clock) -> float:
    """Seconds per epoch of a hand-written loop."""
    rows, cols = data.coo
    users, items = torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)
    torch.manual_seed(0)
    module = Embeddings(data.n_users, data.n_items, FACTORS).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    times = []
    for _ in range(epochs):
        sync(device)
        start = clock()
        total = torch.zeros((), device=device)
        order = torch.randperm(len(users), device=device)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            u = users[idx]
            neg = torch.randint(data.n_items, (len(idx),), device=device)
            opt.zero_grad(set_to_none=True)
            loss = bpr_batch_loss(module, u, items[idx], neg)
            loss.backward()
            opt.step()
            total += loss.detach()
        float(total)  # one sync per epoch, as the template's log line
        times.append(clock() - start)
    return statistics.median(times)


@dataclass(eq=False, repr=False, kw_only=True)
class BenchBPR(TorchRecommender):
    """The bare loop as a template family: same sampling, loss and optimiser."""

    name = "bench_bpr"

    def build(self, train: Interactions, device: torch.device) -> nn.Module:
        self.sampler_ = PairSampler(train, self.batch_size, seed=self.seed, device=device,
                                    exclude_positives=False)
        return Embeddings(train.n_users, train.n_items, FACTORS).to(device)

    def batches(self, epoch: int):
        return self.sampler_

    def loss(self, users, pos, neg):
        return bpr_batch_loss(self.module_, users, pos, neg)

    def export(self):
        return self.module_.users.weight, self.module_.items.weight


class EpochClock:
    """A training hook timing each epoch, from its start to its end (validation included)."""

    def __init__(self, device: torch.device, clock) -> None:
        self.device, self.clock, self.times = device, clock, []

    def on_epoch_start(self, epoch: int) -> None:
        sync(self.device)
        self.start = self.clock()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        sync(self.device)
        self.times.append(self.clock() - self.start)


def template_epochs(model: TorchRecommender, data: Interactions, device: torch.device,
                    clock) -> tuple[float, float]:
    """(mean seconds per epoch, seconds of one-off work: holdout, sampler, validator, export)."""
    epochs = EpochClock(device, clock)
    sync(device)
    start = clock()
    model.fit(data, callbacks=[epochs])
    sync(device)
    return statistics.mean(epochs.times), clock() - start - sum(epochs.times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1024,65536")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--items", type=int, default=8000)
    ap.add_argument("--interactions", type=int, default=400_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--valid-every", default="off,1,5", help="validation intervals for the template")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.clock == "process" and device.type != "cpu":
        ap.error("--clock process measures CPU work: use it with --device cpu")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    data = Interactions.from_frame(synthetic_log(args.users, args.items, args.interactions, seed=0))
    fit_part, _ = holdout(data, 0.1, seed=0)  # the pairs the template trains on
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# torch {torch.__version__} on {name}, {torch.get_num_threads()} threads, {args.clock} "
          f"clock; {data.n_users} users, {data.n_items} items, {fit_part.nnz} training pairs; "
          f"{args.epochs} epochs, median of {args.repeats}")
    print("| device | batch | family | valid_every | bare s/epoch | template s/epoch | ratio "
          "| one-off s |")
    print("|---|---|---|---|---|---|---|---|")
    common = dict(epochs=args.epochs, patience=args.epochs, lr=LR, refit=False, progress=False,
                  device=args.device, seed=0)
    variants = [("template", every) for every in args.valid_every.split(",")] + [("mf", "1")]
    for batch in map(int, args.batches.split(",")):
        rows = {v: [] for v in variants}
        bare = []
        for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
            bare.append(bare_epochs(fit_part, batch, args.epochs, device, clock))
            for family, every in rows:
                validation = ({"valid_frac": 0.0} if every == "off" else
                              {"valid_every": int(every)})
                settings = dict(batch_size=batch, **validation, **common)
                model = (BenchBPR(**settings) if family == "template" else
                         create_model("mf", factors=FACTORS, reg=REG, **settings))
                # without validation nothing is held out: train on the bare loop's pairs
                train = fit_part if every == "off" else data
                rows[family, every].append(template_epochs(model, train, device, clock))
        b = statistics.median(bare)
        for (family, every), runs in rows.items():
            t = statistics.median(r[0] for r in runs)
            once = statistics.median(r[1] for r in runs)
            print(f"| {device.type} | {batch} | {family} | {every} | {b:.4f} | {t:.4f} | {t / b:.2f} "
                  f"| {once:.3f} |", flush=True)


if __name__ == "__main__":
    main()
