"""Model folders: format 2 round trips, format-1 folders, damaged folders, atomic replacement."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from recsys import create_model, load_model
from recsys.data.features import FeatureTable
from recsys.errors import RecsysError
from recsys.models import base
from recsys.models.base import load_seen
from recsys.models.pop import Popularity


class FeaturedPop(Popularity):
    """Popularity that keeps item features and a piece of JSON state (for the folder tests)."""

    uses = frozenset({"item_features"})

    def fit(self, train, *, valid=None, callbacks=()):
        super().fit(train)
        self.levels_ = ["click", "buy"]
        return self

    def _extras(self):
        return {"levels": self.levels_}

    def _load_extras(self, extras):
        self.levels_ = extras["levels"]


@pytest.fixture
def featured(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "featured_pop", FeaturedPop)
    monkeypatch.setattr(FeaturedPop, "name", "featured_pop")
    return FeaturedPop


@pytest.fixture(scope="module")
def als(small_data):
    return create_model("als", factors=8, iterations=2, progress=False).fit(small_data)


def items_frame(data):
    ids = data.item_map.ids
    return pd.DataFrame({"item_id": [*ids, "cold"],
                         "genre": ["a|b" if i % 2 else "b" for i in range(len(ids))] + ["c"],
                         "year": np.arange(len(ids) + 1, dtype=float)})


def test_format_2_folder_round_trips_extras_features_and_seen(featured, small_data, tmp_path):
    table = FeatureTable.from_frame(items_frame(small_data), "item_id")
    train = small_data.with_item_features(table, extend_catalogue=True)
    model = featured().fit(train)
    assert set(model.features_) == {"item_features"}
    model.save(tmp_path / "m", seen=train)
    files = sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*")
                   if p.is_file())
    assert files == ["config.json", "extras.json", "features/item_features/arrays.npz",
                     "features/item_features/table.json", "items.json", "seen.npz", "users.json",
                     "weights.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format"] == 2 and config["model"] == "featured_pop"
    assert set(config["files"]) == set(files) - {"config.json", "seen.npz"}
    loaded = load_model(tmp_path / "m")
    assert loaded.levels_ == ["click", "buy"]
    assert loaded.features_["item_features"].equals(train.item_features)
    assert loaded.item_map_.ids[-1] == "cold"  # the wider catalogue survives the round trip
    users = np.arange(5)
    assert torch.equal(loaded.score(users), model.score(users))
    seen = load_seen(tmp_path / "m", loaded)
    assert (seen.matrix != train.matrix).nnz == 0


def write_format_1(model, path: Path, seen=None) -> None:
    """A folder exactly as format 1 wrote it (config without files, no extras, no metadata)."""
    import scipy.sparse as sp

    path.mkdir(parents=True)
    config = {"model": model.name, "format": 1, "params": model.get_params(),
              "fit_info": model.fit_info_}
    (path / "config.json").write_text(json.dumps(config, indent=2, default=str))
    model.user_map_.save(path / "users.json")
    model.item_map_.save(path / "items.json")
    save_file({k: v.contiguous() for k, v in model._state().items()}, str(path / "weights.safetensors"))
    if seen is not None:
        sp.save_npz(path / "seen.npz", seen.matrix.tocsr())


def test_format_1_folders_still_load(als, small_data, tmp_path):
    write_format_1(als, tmp_path / "old", seen=small_data)
    loaded = load_model(tmp_path / "old")
    assert loaded.fit_info_ == als.fit_info_ and loaded.features_ == {}
    assert torch.equal(loaded.score(np.arange(10)), als.score(np.arange(10)))
    assert load_seen(tmp_path / "old", loaded).nnz == small_data.nnz
    loaded.save(tmp_path / "old")  # re-saving upgrades it to format 2 in place
    assert json.loads((tmp_path / "old" / "config.json").read_text())["format"] == 2
    assert not (tmp_path / "old" / "seen.npz").exists()


def _edit_config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _truncate(name, keep=0.5):
    def cut(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
    return cut


DAMAGE = {
    "weights truncated": (_truncate("weights.safetensors"),
                          r"m/weights.safetensors: \d+ bytes, expected \d+ \(truncated or replaced\)"),
    "weights missing": (lambda f: (f / "weights.safetensors").unlink(), r"m/weights.safetensors: missing"),
    "items.json missing": (lambda f: (f / "items.json").unlink(), r"m/items.json: missing"),
    "config.json invalid": (lambda f: (f / "config.json").write_text('{"model": "als",'),
                            r"m/config.json: not valid JSON"),
    "config.json missing": (lambda f: (f / "config.json").unlink(),
                            r"m: not a model folder \(no config.json\)"),
    "model unknown": (_edit_config(model="nope"), r"m/config.json: unknown model 'nope'"),
    "model edited, params differ": (_edit_config(model="bpr"),
                                    r"m/config.json: model 'bpr' has no parameter\(s\) alpha"),
    "model edited, params fit": (_edit_config(model="bpr", params={"factors": 8}),
                                 r"m/config.json: names model 'bpr' but weights.safetensors was "
                                 r"saved by model 'als'"),
    "format unknown": (_edit_config(format=7), r"m/config.json: format 7 is not one this version reads"),
    "a file changed": (lambda f: (f / "users.json").write_text(
        (f / "users.json").read_text().replace('"u', '"v', 1)),
        r"m/users.json: content differs from the saved model \(SHA-256 mismatch\)"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_folders_are_one_error_naming_the_file(case, als, tmp_path):
    als.save(tmp_path / "m")
    damage, message = DAMAGE[case]
    damage(tmp_path / "m")
    with pytest.raises(RecsysError, match=message):
        load_model(tmp_path / "m")


def test_truncated_seen_items_are_an_error_naming_the_file(als, small_data, tmp_path):
    als.save(tmp_path / "m", seen=small_data)
    _truncate("seen.npz")(tmp_path / "m")
    model = load_model(tmp_path / "m")
    with pytest.raises(RecsysError, match=r"m/seen.npz: not a readable seen-item matrix"):
        load_seen(tmp_path / "m", model)


@pytest.mark.parametrize(("rows", "message"), [
    (-1, r"item_factors has 149 rows, but items.json lists 150 items"),
    (+1, r"item_factors has 151 rows, but items.json lists 150 items"),
])
@pytest.mark.parametrize("fmt", [1, 2])
def test_factor_rows_must_match_the_id_maps(rows, message, fmt, als, tmp_path):
    model = create_model("als", factors=8, progress=False)
    model.user_map_, model.item_map_, model.fit_info_ = als.user_map_, als.item_map_, {}
    items = als.item_factors_
    items = items[:-1] if rows < 0 else torch.cat([items, items[:1]])
    model._set_factors(als.user_factors_, items)
    if fmt == 1:
        write_format_1(model, tmp_path / "m")
    else:
        model.save(tmp_path / "m")
    with pytest.raises(RecsysError, match=r"m/weights.safetensors: " + message):
        load_model(tmp_path / "m")


def test_a_failed_save_leaves_the_older_model_intact(als, small_data, tmp_path, monkeypatch):
    als.save(tmp_path / "m", seen=small_data)
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    other = create_model("pop").fit(small_data)

    def broken_state():
        raise RuntimeError("disk full")

    monkeypatch.setattr(other, "_state", broken_state)
    with pytest.raises(RuntimeError, match="disk full"):
        other.save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left
    monkeypatch.setattr(FeatureTable, "save", lambda *a: (_ for _ in ()).throw(OSError("gone")))
    featured_table = FeatureTable.from_frame(items_frame(small_data), "item_id")
    other = create_model("pop").fit(small_data)
    other.features_ = {"item_features": featured_table.reindex(small_data.item_map)}
    with pytest.raises(OSError, match="gone"):  # fails after weights were written
        other.save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert type(load_model(tmp_path / "m")).__name__ == "ALS"


def test_replacing_a_model_swaps_the_whole_folder(als, small_data, tmp_path):
    als.save(tmp_path / "m", seen=small_data)
    pop = create_model("pop").fit(small_data)
    pop.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "extras.json", "items.json", "users.json", "weights.safetensors"]
    assert type(load_model(tmp_path / "m")).__name__ == "Popularity"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RecsysError, match="other: exists and is not empty, and has no config.json"):
        pop.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(RecsysError, match="notes.txt: exists and is not a folder"):
        pop.save(tmp_path / "other" / "notes.txt")


KILLED_SAVE = textwrap.dedent("""
    import sys, time
    import recsys.models.persist as persist
    from recsys import create_model, load_model
    from recsys.data.synthetic import synthetic_log
    from recsys.data import Interactions

    real_manifest = persist._manifest

    def slow_manifest(folder):  # every file but config.json is written: stall here
        out = real_manifest(folder)
        print("written", flush=True)
        time.sleep(60)
        return out

    persist._manifest = slow_manifest
    data = Interactions.from_frame(synthetic_log(50, 30, 400, string_ids=True, seed=1))
    create_model("pop").fit(data).save(sys.argv[1], seen=data)
""")


def test_a_save_killed_midway_leaves_the_older_model(als, small_data, tmp_path):
    als.save(tmp_path / "m", seen=small_data)
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "m")],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    model = load_model(tmp_path / "m")
    assert type(model).__name__ == "ALS" and load_seen(tmp_path / "m", model).nnz == small_data.nnz
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.tmp-")  # hidden, never loaded


def test_cli_trains_with_feature_files_and_refuses_unused_ones(featured, small_log, tmp_path, capsys):
    from pipelines.cli import main

    small_log.to_csv(tmp_path / "train.csv", index=False)
    data = __import__("recsys").Interactions.from_frame(small_log)
    items_frame(data).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u1"], "age": [3]}).to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "model"
    assert main(["train", "--model", "featured_pop", "--train", str(tmp_path / "train.csv"),
                 "--item-features", str(tmp_path / "items.csv"), "--out", str(out)]) == 0
    model = load_model(out)
    assert model.item_map_.ids[-1] == "cold" and len(model.item_map_) == data.n_items + 1
    assert model.features_["item_features"]["genre"].vocab.values == ["a", "b"]  # 'c': cold only
    assert load_seen(out, model).matrix.shape == (data.n_users, data.n_items + 1)
    capsys.readouterr()
    code = main(["train", "--model", "featured_pop", "--train", str(tmp_path / "train.csv"),
                 "--user-features", str(tmp_path / "users.csv"), "--out", str(tmp_path / "m2")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err == (
        "recsys: error: --user-features: model 'featured_pop' does not use user features (it "
        "reads item_features); models that do: two_tower")
    assert not (tmp_path / "m2").exists()


def test_compare_configs_attach_feature_files_to_train_and_test(small_log, tmp_path):
    from pipelines.compare import prepare_data
    from pipelines.config import load_config

    small_log.to_csv(tmp_path / "events.csv", index=False)
    data = __import__("recsys").Interactions.from_frame(small_log)
    items_frame(data).to_csv(tmp_path / "items.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        f"data: {{kind: file, path: {tmp_path / 'events.csv'}, item_features: {tmp_path / 'items.csv'}}}\n"
        "models: [{name: pop}]\n")
    prepared = prepare_data(load_config(tmp_path / "c.yaml"))
    train, test = prepared.train, prepared.test
    assert train.item_map == test.item_map and train.item_map.ids[-1] == "cold"
    assert train.item_features.equals(test.item_features)
    assert "item_features=" in prepared.rule


@pytest.mark.parametrize("exchange", [True, False])
def test_atomic_dir_replaces_a_folder_whole(exchange, tmp_path, monkeypatch):
    from recsys import atomic

    if not exchange:  # systems without renameat2: rename aside, rename in
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mark").write_text("old")
    (tmp_path / "out" / "old-only").write_text("x")
    with atomic.atomic_dir(tmp_path / "out", marker="mark") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "mark").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mark"]
    assert (tmp_path / "out" / "mark").read_text() == "new"


def test_a_preset_keeps_its_name_through_a_folder(small_data, tmp_path):
    model = create_model("relmf", epochs=2, factors=4, progress=False).fit(small_data)
    assert (model.name, model.preset, model.label) == ("mf", "relmf", "relmf")
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["model"], config["preset"]) == ("mf", "relmf")
    loaded = load_model(tmp_path / "m")
    assert loaded.label == "relmf" and loaded.get_params() == model.get_params()
    plain = create_model("mf", epochs=2, factors=4, progress=False)
    assert plain.preset is None and plain.label == "mf"
    plain.fit(small_data).save(tmp_path / "p")
    assert "preset" not in json.loads((tmp_path / "p" / "config.json").read_text())
