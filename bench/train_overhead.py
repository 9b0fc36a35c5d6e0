"""Per-epoch cost of the training template against a bare torch BPR loop, same batch size.

    python bench/train_overhead.py [--device cpu|cuda] [--batches 1024,65536]
        [--users 20000 --items 8000 --interactions 400000] [--epochs 10] [--repeats 3]
        [--valid-every 1,5]

Both sides train the same model on the same pairs: embeddings (64 factors), BPR loss with
one uniformly drawn negative per positive, an L2 penalty, Adam. The bare loop is what one
would write by hand (a permutation per epoch, slices, no host sync per step). The template
side is a TorchRecommender family doing exactly that, fitted through the full template
(validation carved from train and run after every epoch, early stopping bookkeeping, loss
accumulation, hooks, progress bar off), validating every `--valid-every` epochs. `mf` is
the shipped family (its sampler redraws negatives that are positives). Reported per epoch,
median over repeats:

- train: the training part of an epoch (template's logged `seconds`)
- epoch: everything the fit does divided by the epochs it ran (validation, holdout, export)
- ratio: template / bare
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


def bare_epochs(data: Interactions, batch: int, epochs: int, device: torch.device) -> float:
    """Seconds per epoch of a hand-written loop."""
    rows, cols = data.coo
    users, items = torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)
    torch.manual_seed(0)
    module = Embeddings(data.n_users, data.n_items, FACTORS).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    times = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
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
        times.append(time.perf_counter() - start)
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


def template_epochs(model: TorchRecommender, data: Interactions, device: torch.device) -> tuple[float, float]:
    """(train seconds per epoch, all fit seconds per epoch)."""
    sync(device)
    start = time.perf_counter()
    model.fit(data)
    sync(device)
    total = time.perf_counter() - start
    history = model.history_
    return statistics.median(h["seconds"] for h in history), total / len(history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1024,65536")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--items", type=int, default=8000)
    ap.add_argument("--interactions", type=int, default=400_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", default="template,mf", help="template (BenchBPR) and/or mf")
    ap.add_argument("--valid-every", default="1,5", help="validation intervals for the template")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = Interactions.from_frame(synthetic_log(args.users, args.items, args.interactions, seed=0))
    fit_part, _ = holdout(data, 0.1, seed=0)  # the pairs the template trains on
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# torch {torch.__version__} on {name}, {torch.get_num_threads()} threads; "
          f"{data.n_users} users, {data.n_items} items, {fit_part.nnz} training pairs; "
          f"{args.epochs} epochs, median of {args.repeats}")
    print("| device | batch | family | valid_every | bare s/epoch | train s/epoch | fit s/epoch "
          "| train ratio | epoch ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    common = dict(epochs=args.epochs, patience=args.epochs, lr=LR, refit=False, progress=False,
                  device=args.device, seed=0)
    variants = [("template", int(e)) for e in args.valid_every.split(",")
                if "template" in args.families] + [("mf", 1)] * ("mf" in args.families)
    for batch in map(int, args.batches.split(",")):
        rows = {v: [] for v in variants}
        bare = []
        for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
            bare.append(bare_epochs(fit_part, batch, args.epochs, device))
            for family, every in rows:
                settings = dict(batch_size=batch, valid_every=every, **common)
                model = (BenchBPR(**settings) if family == "template" else
                         create_model("mf", factors=FACTORS, reg=REG, **settings))
                rows[family, every].append(template_epochs(model, data, device))
        b = statistics.median(bare)
        for (family, every), runs in rows.items():
            train = statistics.median(r[0] for r in runs)
            epoch = statistics.median(r[1] for r in runs)
            print(f"| {device.type} | {batch} | {family} | {every} | {b:.3f} | {train:.3f} | "
                  f"{epoch:.3f} | {train / b:.2f} | {epoch / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
