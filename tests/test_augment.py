import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipelines.cli import main
from recsys.augment.llmrec import (
    Augmentation,
    item_texts,
    offline_pick,
    parse_edge,
    parse_phrase,
)
from recsys.data import Interactions
from recsys.data.features import read_features
from recsys.data.idmap import IdMap
from recsys.errors import RecsysError

# two tastes: space films and romances; each user has seen two of one kind
ITEMS = {
    "s1": "Star Wars | space adventure, science fiction",
    "s2": "Alien | science fiction horror in space",
    "s3": "Interstellar | science fiction, astronauts travel through space",
    "s4": "2001: A Space Odyssey | science fiction, space",
    "r1": "Sleepless in Seattle | romantic comedy",
    "r2": "Notting Hill | romance, love story comedy",
    "r3": "Pretty Woman | romantic comedy, love",
    "r4": "When Harry Met Sally | romance, love comedy",
}
SEEN = {"a": ["s1", "s2"], "b": ["r1", "r2"], "c": ["s2", "s3"], "d": ["r2", "r3"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("aug")
    rows = [(u, i) for u, items in SEEN.items() for i in items]
    # popularity makes the base model's (pop) candidates the same for every user
    rows += [(f"x{n}", i) for n in range(3) for i in ITEMS]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(d / "train.csv", index=False)
    pd.DataFrame(list(ITEMS.items()), columns=["item_id", "text"]).to_csv(d / "items.csv", index=False)
    assert main(["train", "--model", "pop", "--train", str(d / "train.csv"), "--out", str(d / "pop")]) == 0
    return d


def test_offline_pick_takes_most_and_least_similar_candidates():
    vectors = np.array([[1, 0], [1, 0.2], [0, 1], [0.9, 0.1], [-1, 0], [0, -1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    matrix = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [0, 1, 2])), shape=(2, 6), dtype=np.float32)
    train = Interactions(matrix, IdMap([0, 1]), IdMap(np.arange(6)))
    cands = np.array([[2, 3, 4], [3, 4, 5]])
    # user 0 ~ (1, 0.1): closest 3, farthest 4; user 1 = (0, 1): closest 3 (0.11), farthest 5
    np.testing.assert_array_equal(offline_pick(train, vectors, np.array([0, 1]), cands),
                                  [[0, 3, 4], [1, 3, 5]])


def test_offline_pick_gives_no_triple_to_a_user_whose_candidates_all_tie():
    vectors = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    matrix = sp.csr_matrix(([1, 1], ([0, 1], [0, 0])), shape=(2, 5), dtype=np.float32)
    train = Interactions(matrix, IdMap([0, 1]), IdMap(np.arange(5)))
    cands = np.array([[1, 2, 3], [1, 4, 2]])  # user 0: three identical texts
    np.testing.assert_array_equal(offline_pick(train, vectors, np.array([0, 1]), cands),
                                  [[1, 4, 1]])


@pytest.mark.parametrize("text, expected", [
    ("liked: 2, disliked: 5", (1, 4)),
    ("Disliked: 1\nLiked: 3", (2, 0)),
    ('{"liked": 4, "disliked": 4}', None),   # the same item twice
    ("liked: 0, disliked: 2", None),         # numbering starts at 1
    ("liked: 2, disliked: 11", None),        # out of range
    ("I would pick the second one", None),
])
def test_parse_edge(text, expected):
    assert parse_edge(text, 10) == expected


def test_parse_phrase():
    assert parse_phrase("\n  drama, French  \nmore") == "drama, French"
    assert parse_phrase("   \n ") is None and len(parse_phrase("x" * 500)) == 300


def test_item_texts_follow_the_item_map_and_name_items_without_text(tmp_path):
    items = IdMap(["i1", "i2", "i3"])
    pd.DataFrame({"item_id": ["i3", "i1", "zz"], "text": ["three", "one", "unknown"]}).to_csv(
        tmp_path / "t.csv", index=False)
    table = read_features(tmp_path / "t.csv", "item_id", text=True)
    assert list(item_texts(table, items)) == ["one", "i2", "three"]
    assert list(item_texts(None, items)) == ["i1", "i2", "i3"]


def test_augmentation_folder_round_trip_and_unknown_ids(tmp_path):
    users, items = IdMap(["u1", "u2"]), IdMap([10, 20, 30])
    aug = Augmentation(np.array([[1, 2, 0]]), np.array(["a", "b, with comma", "c"], dtype=object),
                       np.array(["p1", ""], dtype=object), {"augmenter": "offline"})
    aug.save(tmp_path / "aug", users, items)
    assert pd.read_csv(tmp_path / "aug" / "triples.csv").values.tolist() == [["u2", 30, 10]]
    back = Augmentation.load(tmp_path / "aug", users, items)
    np.testing.assert_array_equal(back.triples, [[1, 2, 0]])
    assert list(back.item_text) == list(aug.item_text) and list(back.user_text) == ["p1", ""]
    assert back.manifest == {"format": 1, "augmenter": "offline"}
    with pytest.raises(RecsysError, match=r"triples.csv: user_id 'u2' at row 1 is not in the training"):
        Augmentation.load(tmp_path / "aug", IdMap(["u1"]), items)
    with pytest.raises(RecsysError, match="not an augmentation folder"):
        Augmentation.load(tmp_path, users, items)


def test_augmentation_ids_read_as_written_and_broken_folders_name_the_file(tmp_path):
    users, items = IdMap(["NA", "u2"]), IdMap(["null", "i2"])
    Augmentation(np.array([[0, 0, 1], [1, 1, 0]]), np.array(["a", "b"], dtype=object),
                 np.array(["p", "q"], dtype=object)).save(tmp_path / "aug", users, items)
    back = Augmentation.load(tmp_path / "aug", users, items)  # 'NA' and 'null' are ids
    np.testing.assert_array_equal(back.triples, [[0, 0, 1], [1, 1, 0]])

    def broken(name, change):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "aug", folder)
        change(folder)
        return folder

    cases = [
        (lambda f: (f / "triples.csv").write_text("user_id,pos_item_id\nNA,null\n"),
         r"triples.csv: missing column\(s\) neg_item_id"),
        (lambda f: (f / "triples.csv").write_text("user_id,pos_item_id,neg_item_id\nu2,i2,null\n,i2,null\n"),
         r"triples.csv: column 'user_id' row 2: empty cell, expected an id"),
        (lambda f: (f / "triples.csv").write_text("user_id,pos_item_id,neg_item_id\nu2,i2,null\nNA,i2,i2\n"),
         r"triples.csv: row 2 likes and dislikes the same item 'i2'$"),
        (lambda f: (f / "item_text.csv").unlink(), r"item_text.csv: no such file"),
        (lambda f: (f / "manifest.json").write_text("{not json"), r"manifest.json: not valid JSON"),
        (lambda f: (f / "user_text.csv").write_text("user_id,text\nu2,q\nzz,r\n"),
         r"user_text.csv: user_id 'zz' at row 2 is not in the training data"),
        (lambda f: (f / "item_text.csv").write_text("item_id,text\ni2,a\nnull,b\ni2,c\n"),
         r"item_text.csv: item_id 'i2' appears twice \(rows 1 and 3\); one text per id$"),
    ]
    for n, (change, message) in enumerate(cases):
        with pytest.raises(RecsysError, match=message):
            Augmentation.load(broken(f"b{n}", change), users, items)


def test_cli_offline_augmentation_names_the_taste_matching_items(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "cache"))
    out = tmp_path / "aug"
    argv = ["augment", "--train", files / "train.csv", "--item-text", files / "items.csv",
            "--base", files / "pop", "--augmenter", "offline", "--candidates", "4", "--out", out]
    assert main([str(a) for a in argv]) == 0
    triples = pd.read_csv(out / "triples.csv")
    picks = {u: (p, n) for u, p, n in triples.itertuples(index=False)}
    # every (u, i+, i-) names unseen items; the x-users have seen everything and get none
    assert set(picks) == set(SEEN)
    for user, (pos, neg) in picks.items():
        kind = SEEN[user][0][0]
        assert pos not in SEEN[user] and neg not in SEEN[user]
        assert pos[0] == kind and neg[0] != kind, (user, pos, neg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["augmenter"] == "offline" and manifest["counts"]["triples"] == 4
    assert manifest["encoder"]["name"] == "all-MiniLM-L6-v2" and manifest["base"]["name"] == "pop"
    profiles = pd.read_csv(out / "user_text.csv").set_index("user_id")["text"]
    assert ITEMS["s1"] in profiles["a"] and ITEMS["r1"] not in profiles["a"]


def test_cli_augment_bad_input_is_one_line(files, tmp_path, capsys):
    argv = ["augment", "--train", files / "train.csv", "--item-text", files / "items.csv",
            "--base", files / "pop", "--candidates", "1", "--out", tmp_path / "aug"]
    assert main([str(a) for a in argv]) == 2
    assert "candidates must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "aug").exists()
    for flag, value in (("--users", "0"), ("--users", "-5"), ("--history", "0")):
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in [*argv[:-4], flag, value, "--out", tmp_path / "aug"]])
        assert exit_.value.code == 2
        assert f"argument {flag}: {value} is not a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "aug").exists()
    other = tmp_path / "other-items.csv"  # item text of another catalogue: no id in common
    other.write_text("item_id,text\nmovie1,a film\nmovie2,another\n")
    argv = ["augment", "--train", files / "train.csv", "--item-text", other, "--base",
            files / "pop", "--out", tmp_path / "aug"]
    assert main([str(a) for a in argv]) == 2
    assert capsys.readouterr().err.endswith(f"{other}: none of its 2 ids is an item of the training "
                                            "data (its first: 'movie1'; the data's first: 'r1')\n")
    assert not (tmp_path / "aug").exists()


def test_cli_augment_never_replaces_a_foreign_folder(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "cache"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    argv = ["augment", "--train", files / "train.csv", "--item-text", files / "items.csv",
            "--base", files / "pop", "--candidates", "3", "--out", tmp_path / "mine"]
    assert main([str(a) for a in argv]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_cli_train_llmrec_with_and_without_an_augmentation_folder(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_DATA_HOME", str(tmp_path / "cache"))
    common = ["--train", files / "train.csv", "--item-text", files / "items.csv"]
    fast = ["--param", "factors=8", "--param", "layers=2", "--param", "epochs=3"]
    assert main([str(a) for a in ["augment", *common, "--base", files / "pop", "--candidates", "3",
                                  "--out", tmp_path / "aug"]]) == 0
    for name, extra in (("with", ["--augmentation", tmp_path / "aug"]),
                        ("without", ["--param", "candidates=3"])):
        out = tmp_path / f"m-{name}"
        assert main([str(a) for a in ["train", "--model", "llmrec", *common, *extra, *fast,
                                      "--out", out]]) == 0, capsys.readouterr().err
        config = json.loads((out / "config.json").read_text())
        assert config["fit_info"]["augmented_triples"] == 4 and config["fit_info"]["encoder"]
        assert main([str(a) for a in ["recommend", "--model", out, "--k", "2", "--out",
                                      tmp_path / f"recs-{name}.parquet"]]) == 0
        recs = pd.read_parquet(tmp_path / f"recs-{name}.parquet")
        assert set(recs.user_id) == {"a", "b", "c", "d"}  # the others have seen every item
    assert main([str(a) for a in ["train", "--model", "lightgcn", *common, "--out", tmp_path / "g"]]) == 2
    assert "--item-text: model 'lightgcn' does not use item text" in capsys.readouterr().err
