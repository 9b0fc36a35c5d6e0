"""Data-parallel training on 2 CPU processes (gloo) against the one-process run."""

import json
import os
import sys

import pytest
import torch

from pipelines.cli import main
from recsys import distributed
from recsys.data.files import read_interactions
from recsys.data.synthetic import synthetic_log
from recsys.errors import RecsysError
from recsys.models.base import create_model
from recsys.store import open_model

WORKER = str(__import__("pathlib").Path(__file__).with_name("ddp_worker.py"))
COMMON = {"progress": False, "device": "cpu", "seed": 3}
# batch 256 over ~2590 training pairs: the last batch (31 pairs) splits unevenly, 15 + 16
MODELS = {
    "mf": {"factors": 8, "epochs": 30, "batch_size": 256, "lr": 0.01, "patience": 3, **COMMON},
    "lightgcn": {"factors": 8, "layers": 2, "epochs": 6, "batch_size": 512, "patience": 2,
                 **COMMON},
    "gnolr": {"factors": 8, "epochs": 4, "batch_size": 256, **COMMON},
}
# families that draw randomness inside their loss (two-tower: shared negatives, id dropout)
# take other draws than one process would; they train data-parallel all the same
OTHERS = {"two_tower": {"dim": 8, "hidden": [16], "epochs": 2, "batch_size": 512, **COMMON}}
# Tolerance. The N-process run takes the one-process run's steps on the same batches; only the
# order of the floating-point sums differs (each half-batch gradient summed apart, then averaged
# over ranks). That perturbs each gradient element by a few float32 ulps (2^-24 relative), so
# each Adam step (size at most lr per element, a ratio of moments) moves a parameter by about
# lr * 1e-7 differently; over ~150 steps at lr 0.01 that is ~1e-7 (measured: 7e-7 at most, the
# steps feeding back into later gradients). The tolerance 2e-5 on factors of size ~0.3 leaves
# a 30x margin for that drift and is still 25x below what a wrong reduction leaves: leaving the
# uneven last batch unweighted moves the factors by 5e-4.
ATOL = 2e-5


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    synthetic_log(200, 100, 3000, seed=1).to_csv(folder / "train.csv", index=False)
    cli = ["--model", "mf", "--train", str(folder / "train.csv"), "--param", "epochs=3",
           "--param", "device=cpu", "--param", "progress=false"]
    models = {**MODELS, **OTHERS}
    (folder / "spec.json").write_text(json.dumps({"models": models, "cli": cli}))
    distributed.launch(2, [WORKER, str(folder)])
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return folder, read_interactions(folder / "train.csv"), ranks


@pytest.mark.parametrize("name", list(MODELS))
def test_two_processes_train_the_one_process_model(launched, name):
    _, train, ranks = launched
    single = create_model(name, **MODELS[name]).fit(train)
    for fitted in (rank[name] for rank in ranks):
        torch.testing.assert_close(fitted["users"], single.user_factors(), atol=ATOL, rtol=0)
        torch.testing.assert_close(fitted["items"], single.item_factors(), atol=ATOL, rtol=0)
        assert fitted["fit_info"]["best_epoch"] == single.fit_info_["best_epoch"]
        assert fitted["fit_info"]["epochs_run"] == single.fit_info_["epochs_run"]
        assert fitted["fit_info"]["processes"] == 2 and "processes" not in single.fit_info_
        # the logged losses are the global batch means, averaged over the ranks
        for got, want in zip(fitted["history"], single.history_, strict=True):
            assert got.keys() == want.keys()
            assert got["epoch"] == want["epoch"]
            for key in got:
                if "loss" in key or key in ("bpr", "reg", "refit_bpr", "refit_reg"):
                    assert got[key] == pytest.approx(want[key], rel=1e-5)
    # every rank ends with the same replica
    assert torch.equal(ranks[0][name]["users"], ranks[1][name]["users"])
    assert torch.equal(ranks[0][name]["items"], ranks[1][name]["items"])


@pytest.mark.parametrize("name", list(OTHERS))
def test_families_drawing_in_their_loss_train_one_replica(launched, name):
    _, _, ranks = launched
    first, second = (rank[name] for rank in ranks)
    assert torch.isfinite(first["items"]).all()
    assert torch.equal(first["users"], second["users"])
    assert torch.equal(first["items"], second["items"])


def test_early_stopping_is_agreed(launched):
    _, _, ranks = launched
    infos = [fitted["mf"]["fit_info"] for fitted in ranks]
    assert infos[0]["epochs_run"] < MODELS["mf"]["epochs"]  # stopped early ...
    assert infos[0]["epochs_run"] == infos[1]["epochs_run"]  # ... on both ranks together
    assert infos[0]["best_epoch"] == infos[1]["best_epoch"]
    # only rank 0 validated; the score it broadcast is what both ranks kept
    assert infos[0]["best_valid"] == infos[1]["best_valid"]
    assert [h.get("valid") for h in ranks[0]["mf"]["history"]] == \
        [h.get("valid") for h in ranks[1]["mf"]["history"]]


def test_only_rank_0_writes_the_model_folder(launched):
    folder, _, _ = launched
    assert (folder / "cli_rank0").is_dir()
    assert not (folder / "cli_rank1").exists()


def test_cli_nproc_end_to_end(launched, tmp_path, capsys):
    folder, train, _ = launched
    params = ["--param", "factors=8", "--param", "epochs=4", "--param", "batch_size=200",
              "--param", "device=cpu", "--param", "progress=false", "--param", "seed=3"]
    argv = ["train", "--model", "mf", "--train", str(folder / "train.csv"), *params]
    assert main([*argv, "--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    two, one = open_model(str(tmp_path / "two"))[0], open_model(str(tmp_path / "one"))[0]
    torch.testing.assert_close(two.user_factors(), one.user_factors(), atol=ATOL, rtol=0)
    torch.testing.assert_close(two.item_factors(), one.item_factors(), atol=ATOL, rtol=0)
    assert two.fit_info_["best_epoch"] == one.fit_info_["best_epoch"]


@pytest.mark.parametrize(("nproc", "model", "message"), [
    ("0", "mf", "--nproc must be at least 1, got 0"),
    ("-2", "mf", "--nproc must be at least 1, got -2"),
    ("2", "pop", "model 'pop' does not train with torch"),
])
def test_bad_nproc_is_one_clear_error(tmp_path, capsys, nproc, model, message):
    synthetic_log(20, 10, 60, seed=1).to_csv(tmp_path / "t.csv", index=False)
    code = main(["train", "--model", model, "--train", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "m"), "--nproc", nproc])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("recsys: error:") and message in err
    assert not (tmp_path / "m").exists()


def test_more_cpu_processes_than_cores_is_refused_before_launching(tmp_path, capsys):
    synthetic_log(20, 10, 60, seed=1).to_csv(tmp_path / "t.csv", index=False)
    nproc = (os.cpu_count() or 1) + 1
    code = main(["train", "--model", "mf", "--train", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "m"), "--nproc", str(nproc), "--param", "device=cpu"])
    assert code == 2
    assert capsys.readouterr().err == (f"recsys: error: --nproc {nproc}: this host has "
                                       f"{nproc - 1} CPU cores (one process per core on CPU)\n")
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a host without CUDA")
def test_nproc_on_missing_gpus_is_refused_before_launching(tmp_path, capsys):
    code = main(["train", "--model", "mf", "--train", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "m"), "--nproc", "2", "--param", "device=cuda"])
    assert code == 2
    assert "device 'cuda' requested but no CUDA device is available" in capsys.readouterr().err


def test_nproc_must_be_an_integer(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "mf", "--train", "t.csv", "--out", "m", "--nproc", "two"])
    assert exit_.value.code == 2
    assert "--nproc: invalid int value: 'two'" in capsys.readouterr().err


def test_world_comes_from_the_launcher_environment(monkeypatch):
    assert distributed.world() == distributed.World(rank=0, size=1, local_rank=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.world() == distributed.World(rank=1, size=2, local_rank=1)
    assert not distributed.is_main()


def test_nproc_other_than_the_launched_processes_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["train", "--model", "mf", "--train", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "m"), "--nproc", "3"])
    assert code == 2
    assert "--nproc 3, but the launcher started 2 processes" in capsys.readouterr().err


@pytest.mark.parametrize(("n", "world", "parts", "weights"), [
    (5, 2, [[0, 1], [2, 3, 4]], [0.8, 1.2]),
    (4, 2, [[0, 1], [2, 3]], [1.0, 1.0]),
    (1, 2, [[0], [0]], [0.0, 2.0]),  # rank 0 has no part: it takes the batch at weight 0
])
def test_shard_cuts_the_global_batch(n, world, parts, weights):
    users = torch.arange(n)
    items = torch.arange(n) + 10
    loss = users.float() ** 2  # any per-pair loss: the weighted part means average to the mean
    means = []
    for rank in range(world):
        (u, i, none), weight = distributed.shard((users, items, None), distributed.World(rank, world))
        assert u.tolist() == parts[rank] and i.tolist() == [x + 10 for x in parts[rank]]
        assert none is None and weight == pytest.approx(weights[rank])
        means.append(weight * loss[u].mean())
    assert float(sum(means) / world) == pytest.approx(float(loss.mean()))


def test_launch_failure_names_the_process(tmp_path):
    with pytest.raises(RecsysError, match=r"training process \d of 2 failed with exit code 3"):
        distributed.launch(2, ["-c", "import sys; sys.exit(3)"], program=sys.executable)
