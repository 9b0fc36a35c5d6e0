"""Files written: atomic (the previous file or the new one, never a torn one), and an `--out` of
the wrong kind refused before any work."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.batch import recommend_to_parquet
from pipelines.cli import main
from recsys import create_model
from recsys.data import Interactions
from recsys.inference import Ranker


@pytest.fixture
def pop_ranker():
    df = pd.DataFrame({"user_id": np.repeat(np.arange(30), 3), "item_id": np.arange(90) % 7})
    data = Interactions.from_frame(df)
    return Ranker(create_model("pop").fit(data), data), data


def test_recommend_out_is_replaced_whole_or_not_at_all(pop_ranker, tmp_path):
    ranker, data = pop_ranker
    out = tmp_path / "recs.parquet"
    users = data.user_map.ids
    assert recommend_to_parquet(ranker, users, 2, out, progress=False)["rows"] == 60
    before = out.read_bytes()

    calls = []
    real = ranker.recommend

    def interrupted(batch, k, **kwargs):
        calls.append(len(batch))
        if len(calls) == 2:  # mid-write: the target is still the old file; the new one is beside it
            assert out.read_bytes() == before
            assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            raise KeyboardInterrupt
        return real(batch, k, **kwargs)

    ranker.recommend = interrupted
    with pytest.raises(KeyboardInterrupt):
        recommend_to_parquet(ranker, users, 3, out, chunk_users=10, progress=False)
    assert out.read_bytes() == before and len(pd.read_parquet(out)) == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.parquet"]

    ranker.recommend = real
    assert recommend_to_parquet(ranker, users, 3, out, chunk_users=10, progress=False)["rows"] == 90
    assert pd.read_parquet(out).groupby("user_id").size().tolist() == [3] * 30


def test_chunk_users_must_be_positive(pop_ranker, tmp_path):
    ranker, data = pop_ranker
    with pytest.raises(ValueError, match="chunk_users must be positive, got -1"):
        recommend_to_parquet(ranker, data.user_map.ids[:3], 2, tmp_path / "r.parquet", chunk_users=-1)
    assert not (tmp_path / "r.parquet").exists()


@pytest.mark.parametrize("argv, error", [
    (["recommend", "--model", "{missing}", "--out", "{folder}"],
     "--out {folder}: is an existing folder; expected a file path"),
    (["recommend", "--model", "{missing}", "--out", "{file}/r.parquet"],
     "--out {file}/r.parquet: {file} is a file, not a folder"),
    (["recommend", "--model", "models:/x@champion", "--spark", "--out", "{file}"],
     "--out {file}: is an existing file; expected a folder path"),
    (["data", "prepare", "--input", "{missing}", "--out", "{file}"],
     "--out {file}: is an existing file; expected a folder path"),
    (["train", "--model", "pop", "--train", "{missing}", "--out", "{file}"],
     "--out {file}: is an existing file; expected a folder path"),
    (["evaluate", "--model", "{missing}", "--test", "{missing}", "--json", "{folder}"],
     "--json {folder}: is an existing folder; expected a file path"),
])
def test_out_of_the_wrong_kind_is_refused_before_any_work(tmp_path, capsys, argv, error):
    paths = {"missing": tmp_path / "missing", "folder": tmp_path / "folder", "file": tmp_path / "f.txt"}
    paths["folder"].mkdir()
    paths["file"].write_text("keep me")
    code = main([a.format(**paths) for a in argv])  # the missing model or input is never opened
    assert code == 2
    assert capsys.readouterr().err == f"recsys: error: {error.format(**paths)}\n"
    assert paths["file"].read_text() == "keep me" and not any(paths["folder"].iterdir())


def test_prepare_writes_its_files_atomically_and_reports_the_share_reached(tmp_path, capsys):
    # 10 pairs at 4 times; --test-frac 0.3 asks for 3 test pairs, but equal times stay together:
    # cut at t=3 gives 5 test pairs, cut at t=4 gives 1 (both 2 away; the larger share wins)
    times = [1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    rows = "".join(f"u{i // 2},i{i % 2},{t}\n" for i, t in enumerate(times))
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n" + rows)
    out = tmp_path / "prep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "prepare", "--input", str(tmp_path / "e.csv"), "--split", "temporal",
                 "--test-frac", "0.3", "--out", str(out)]) == 0
    assert "test share reached 0.5" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["test_frac"] == 0.3 and meta["test_frac_reached"] == 0.5
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "notes.txt", "test.parquet",
                                                      "train.parquet"]
    test = pd.read_parquet(out / "test.parquet")
    train = pd.read_parquet(out / "train.parquet")
    assert train["timestamp"].max() < test["timestamp"].min() == 3
