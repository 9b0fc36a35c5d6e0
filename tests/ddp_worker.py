"""One rank of the data-parallel tests (tests/test_distributed.py starts it under the elastic
launcher): fits the models of FOLDER/spec.json with the library and saves each rank's factors,
fit info and history to FOLDER/rank<R>.pt, then runs `recsys train` with --out
FOLDER/cli_rank<R> (only rank 0 may write its folder)."""

import json
import sys
from pathlib import Path

import torch

from pipelines.cli import main
from recsys import distributed
from recsys.data.files import read_interactions
from recsys.models.base import create_model


def run(folder: Path) -> int:
    spec = json.loads((folder / "spec.json").read_text())
    train = read_interactions(folder / "train.csv")
    rank = distributed.world().rank
    fitted = {}
    for name, params in spec["models"].items():
        model = create_model(name, **params).fit(train)
        fitted[name] = {"users": model.user_factors(), "items": model.item_factors(),
                        "fit_info": model.fit_info_, "history": model.history_}
    torch.save(fitted, folder / f"rank{rank}.pt")
    return main(["train", *spec["cli"], "--out", str(folder / f"cli_rank{rank}")])


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
