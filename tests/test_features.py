import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.features import FeatureTable, Vocabulary, infer_kind, read_features
from recsys.data.idmap import IdMap
from recsys.errors import DataError


@pytest.fixture
def frame() -> pd.DataFrame:
    """Items b, a, c, d with every kind of column, as text (as read from a CSV file)."""
    return pd.DataFrame({
        "item_id": ["b", "a", "c", "d"],
        "genre": ["x|y", "y", "", "z| x |"],
        "year": ["1990", "", "2000", "1995"],
        "color": ["red", "blue", "red", None],
        "emb": ["1 2", "3 4", "", "5 6"],
        "title": ["the big one", "a small thing here", "other big word", "yet another title"],
    })


def test_kinds_are_inferred_from_the_values(frame):
    table = FeatureTable.from_frame(frame, "item_id")
    assert table.kinds == {"genre": "multi", "year": "numeric", "color": "categorical",
                           "emb": "dense", "title": "text"}
    assert infer_kind(pd.Series([1.5, None])) == "numeric"
    assert infer_kind(pd.Series([[0.1, 0.2], [0.3, 0.4]])) == "dense"
    assert infer_kind(pd.Series(["a", "a", "b"])) == "categorical"


def test_rows_follow_sorted_ids_and_vocabulary_is_fitted_on_training_ids(frame):
    table = FeatureTable.from_frame(frame, "item_id", fit_ids=["a", "b", "c"])
    assert table.ids.ids.tolist() == ["a", "b", "c", "d"]
    color = table["color"]
    assert color.vocab.values == ["blue", "red"]
    assert color.codes.tolist() == [1, 2, 2, 0]  # d: missing -> 0
    genre = table["genre"]
    # 'z' only occurs on d, outside the training ids: out of vocabulary (0); pieces are stripped
    assert genre.vocab.values == ["x", "y"]
    assert genre.offsets.tolist() == [0, 1, 3, 3, 5]
    assert genre.codes.tolist() == [2, 1, 2, 0, 1]
    year = table["year"]  # fitted on b=1990, c=2000: mean 1995, std 5
    assert (year.mean, year.std) == (1995.0, 5.0)
    assert year.values.tolist() == [0.0, -1.0, 1.0, 0.0]
    assert year.missing.tolist() == [True, False, False, False]
    emb = table["emb"]
    assert emb.values.tolist() == [[3, 4], [1, 2], [0, 0], [5, 6]]
    assert emb.missing.tolist() == [False, False, True, False]
    assert table["title"].values.tolist()[0] == "a small thing here"


def test_vocabulary_oov_min_count_and_decode():
    vocab = Vocabulary.build(["b", "a", "b", "c", ""], min_count=2)
    assert vocab.values == ["b"] and vocab.size == 2
    assert vocab.encode(["b", "a", "", "zzz"]).tolist() == [1, 0, 0, 0]
    assert vocab.decode(np.array([1, 0])).tolist() == ["b", None]


def test_multi_valued_rows_feed_embedding_bag_directly(frame):
    table = FeatureTable.from_frame(frame, "item_id", kinds={"genre": "multi"})
    genre = table["genre"]  # vocabulary x, y, z
    bag = torch.nn.EmbeddingBag(genre.vocab.size, 1, mode="sum")
    with torch.no_grad():
        bag.weight.copy_(torch.tensor([[0.0], [1.0], [10.0], [100.0]]))
    out = bag(torch.from_numpy(genre.codes), torch.from_numpy(genre.offsets[:-1]))
    # a: y; b: x|y; c: none; d: z|x
    assert out.squeeze(1).tolist() == [10.0, 11.0, 0.0, 101.0]


def test_reindex_subset_and_wider_id_maps(frame):
    table = FeatureTable.from_frame(frame, "item_id")
    moved = table.reindex(IdMap(["d", "new", "a"]))
    assert moved.ids.ids.tolist() == ["d", "new", "a"]
    assert moved.meta["rows_without_features"] == 1 and moved.meta["dropped_unknown_ids"] == 2
    assert moved["color"].codes.tolist() == [0, 0, 1]
    assert moved["genre"].offsets.tolist() == [0, 2, 2, 3]
    assert moved["genre"].vocab.decode(moved["genre"].codes).tolist() == ["z", "x", "y"]
    assert moved["year"].missing.tolist() == [False, True, True]
    assert moved["emb"].values.tolist() == [[5, 6], [0, 0], [3, 4]]
    assert moved["title"].values.tolist() == ["yet another title", "", "a small thing here"]
    sub = table.subset(np.array([3, 0]))
    assert sub.equals(table.reindex(IdMap(["d", "a"])))


def test_encode_applies_learned_vocabularies_and_statistics_to_new_rows(frame):
    table = FeatureTable.from_frame(frame, "item_id", fit_ids=["a", "b", "c"])
    new = table.encode(pd.DataFrame({"item_id": ["n1"], "genre": ["x|q"], "year": [2005],
                                     "color": ["green"]}), "item_id")
    assert new["genre"].codes.tolist() == [1, 0]
    assert new["year"].values.tolist() == [2.0]
    assert new["color"].codes.tolist() == [0]
    assert new["emb"].missing.tolist() == [True]


def test_torch_batches_gather_rows_on_the_device(frame):
    table = FeatureTable.from_frame(frame, "item_id")
    batch = table.to("cpu").batch(torch.tensor([3, 0]))
    assert batch["genre"].tolist() == [[3, 1], [2, 0]]  # padded with 0
    assert batch["color"].tolist() == [0, 1]
    assert batch["year:missing"].tolist() == [0.0, 1.0]
    assert batch["emb"].tolist() == [[5, 6], [3, 4]]
    assert "title" not in batch
    bag = torch.nn.EmbeddingBag(4, 1, mode="mean", padding_idx=0)
    with torch.no_grad():
        bag.weight.copy_(torch.tensor([[0.0], [2.0], [4.0], [8.0]]))
    assert bag(batch["genre"]).squeeze(1).tolist() == [5.0, 4.0]  # mean over real values


def test_save_load_round_trip_without_pickle(frame, tmp_path):
    table = FeatureTable.from_frame(frame, "item_id", fit_ids=["a", "b"])
    table.save(tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["arrays.npz", "table.json"]
    loaded = FeatureTable.load(tmp_path / "t")
    assert loaded.equals(table)
    assert loaded["title"].values.tolist() == table["title"].values.tolist()
    table.save(tmp_path / "t")  # an existing table folder is replaced
    assert FeatureTable.load(tmp_path / "t").equals(table)


def test_damaged_table_files_are_errors_naming_the_file(frame, tmp_path):
    FeatureTable.from_frame(frame, "item_id").save(tmp_path / "t")
    arrays = tmp_path / "t" / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:50])
    with pytest.raises(DataError, match=r"t/arrays.npz: damaged feature arrays"):
        FeatureTable.load(tmp_path / "t")
    (tmp_path / "t" / "table.json").write_text("{")
    with pytest.raises(DataError, match=r"t/table.json: not a feature table"):
        FeatureTable.load(tmp_path / "t")


@pytest.mark.parametrize(("frame_data", "kinds", "message"), [
    ({"id": ["a"], "x": ["1"]}, None, r"f.csv: no id column 'item_id' \(columns are: id, x\)"),
    ({"item_id": ["a", "b", "a"], "x": ["1", "2", "3"]}, None,
     r"f.csv: id 'a' appears twice in column 'item_id' \(rows 1 and 3\)"),
    ({"item_id": ["a", ""], "x": ["1", "2"]}, None, r"f.csv: column 'item_id' row 2: missing id"),
    ({"item_id": ["a", "b", "c"], "x": ["1", "2", "two"]}, {"x": "numeric"},
     r"f.csv: column 'x' row 3: 'two' is not a finite number \(the column is numeric\)"),
    ({"item_id": ["a", "b"], "x": ["1", "inf"]}, {"x": "numeric"},
     r"f.csv: column 'x' row 2: 'inf' is not a finite number"),
    ({"item_id": ["a", "b"], "v": ["1 2", "1 2 3"]}, {"v": "dense"},
     r"f.csv: column 'v' row 2: 3 values, expected 2 \(the column is a dense vector\)"),
    ({"item_id": ["a", "b"], "v": ["1 2", "1 x"]}, {"v": "dense"},
     r"f.csv: column 'v' row 2: 'x' is not a finite number \(the column is a dense vector\)"),
    ({"item_id": ["a"], "x": ["1"]}, {"y": "numeric"}, r"kinds names column 'y'"),
    ({"item_id": ["a"], "x": ["1"]}, {"x": "colour"}, r"column 'x': unknown kind 'colour'"),
    ({"item_id": ["a"]}, None, r"f.csv: no feature columns besides the id column 'item_id'"),
    ({"item_id": ["a", "b"], "x": ["1", "2"], "e": ["", None]}, None,
     r"^f.csv: column 'e' is empty in every row; fill it or remove it$"),
    # a vector column with one short or non-number cell is read as vectors, naming the cell
    ({"item_id": list("abcdefghijk"), "v": ["1 2 3"] * 4 + ["1 2"] + ["4 5 6"] * 6}, None,
     r"^f.csv: column 'v' row 5: 2 values, expected 3 \(the column is a dense vector\)$"),
    ({"item_id": list("abcdefghijk"), "v": ["1 2 3"] * 10 + ["1 nan 3"]}, None,
     r"^f.csv: column 'v' row 11: 'nan' is not a finite number \(the column is a dense vector\)$"),
])
def test_bad_feature_frames_are_one_clear_error(frame_data, kinds, message):
    with pytest.raises(DataError, match=message):
        FeatureTable.from_frame(pd.DataFrame(frame_data), "item_id", kinds=kinds, source="f.csv")


def test_read_features_and_item_text_files(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,genre,year\n7,a|b,2001\n007,b,\n")
    table = read_features(tmp_path / "items.csv", "item_id", ids=IdMap([7, 8]))
    assert table.ids.ids.tolist() == [7, 8]  # '007' is another id, dropped and counted
    assert table.meta["dropped_unknown_ids"] == 1 and table.meta["rows_without_features"] == 1
    assert table["genre"].vocab.values == ["a", "b"]  # vocabulary from every row of the file
    (tmp_path / "text.csv").write_text('item_id,text\n1,"Toy Story, a film"\n2,cars\n')
    text = read_features(tmp_path / "text.csv", "item_id", text=True)
    assert text.kinds == {"text": "text"} and text["text"].values.tolist() == ["Toy Story, a film", "cars"]
    (tmp_path / "bad.csv").write_text("item_id,text,b\n1,x,y\n")
    with pytest.raises(DataError, match="bad.csv: a text file has the columns item_id and text; "
                       "found item_id, text, b"):
        read_features(tmp_path / "bad.csv", "item_id", text=True)


# ---- attached to Interactions ----------------------------------------------------------------
@pytest.fixture
def data():
    from recsys.data import Interactions

    log = pd.DataFrame({"user_id": [1, 1, 2, 3, 3], "item_id": ["b", "a", "b", "a", "c"],
                        "timestamp": [1, 2, 3, 4, 5]})
    return Interactions.from_frame(log, time_col="timestamp")


def test_item_features_follow_subsets_and_splits(data, frame):
    from recsys.data import random_split

    table = FeatureTable.from_frame(frame, "item_id")
    with_features = data.with_item_features(table)
    assert with_features.item_features.ids == data.item_map  # a, b, c; d's row dropped
    assert with_features.item_features.meta["dropped_unknown_ids"] == 1
    sub = with_features.subset(items=np.array([2, 0]))
    assert sub.item_features.ids.ids.tolist() == ["c", "a"]
    assert sub.item_features["color"].codes.tolist() == [2, 1]
    users = FeatureTable.from_frame(pd.DataFrame({"user_id": [3, 1], "age": [30, 20]}), "user_id")
    both = with_features.with_user_features(users)
    assert both.user_features["age"].missing.tolist() == [False, True, False]  # user 2: none
    train, test = random_split(both, test_frac=0.5, seed=0)
    assert train.item_features.ids == train.item_map and test.user_features.ids == test.user_map
    with pytest.raises(DataError, match="rows do not follow the item id map"):
        type(data)(data.matrix, data.user_map, data.item_map, item_features=users)


def test_a_wider_catalogue_adds_items_without_pairs(data, frame):
    table = FeatureTable.from_frame(frame, "item_id")
    wide = data.with_item_features(table, extend_catalogue=True)
    assert wide.item_map.ids.tolist() == ["a", "b", "c", "d"]  # d: features, no interactions
    assert wide.matrix.shape == (3, 4) and wide.nnz == data.nnz
    assert wide.timestamps.shape == (3, 4)
    assert wide.item_popularity.tolist() == [2, 2, 1, 0]
    assert (wide.matrix[:, :3] != data.matrix).nnz == 0  # known items keep their indices
    assert wide.item_features["color"].codes.tolist() == [1, 2, 2, 0]
    assert wide.meta["items_without_pairs_added"] == 1
    text = FeatureTable.from_frame(pd.DataFrame({"item_id": ["e", "a"], "text": ["x y z", "u v w"]}),
                                   "item_id", kinds={"text": "text"})
    wider = wide.with_item_text(text, extend_catalogue=True)
    assert wider.item_map.ids.tolist() == ["a", "b", "c", "d", "e"]
    assert wider.item_features["color"].codes.tolist() == [1, 2, 2, 0, 0]  # re-indexed too
    assert wider.item_text["text"].values.tolist() == ["u v w", "", "", "", "x y z"]
    ints = FeatureTable.from_frame(pd.DataFrame({"item_id": [5], "x": [1.0]}), "item_id")
    with pytest.raises(DataError, match="item ids such as 5 are integers"):
        data.with_item_features(ints, extend_catalogue=True)


def test_other_separators_make_a_column_multi_valued():
    frame = pd.DataFrame({"item_id": [1, 2], "class": ["Animation Children's Comedy", "Action"],
                          "title": ["Toy Story", "GoldenEye"]})  # as in a RecBole .item file
    table = FeatureTable.from_frame(frame, "item_id", seps={"class": " "})
    assert table.kinds == {"class": "multi", "title": "categorical"}
    assert table["class"].lengths.tolist() == [3, 1]
    assert table["class"].vocab.values == ["Action", "Animation", "Children's", "Comedy"]
    assert table.encode(frame.iloc[[1]], "item_id")["class"].codes.tolist() == [1]


def test_a_number_column_with_a_stray_text_cell_is_named_in_a_warning(caplog):
    ages = [str(20 + i) for i in range(11)] + ["abc"]
    frame = pd.DataFrame({"user_id": range(12), "age": ages, "city": list("ab") * 6})
    with caplog.at_level("WARNING", logger="recsys"):
        table = FeatureTable.from_frame(frame, id_col="user_id", source="users.csv")
    assert table.columns["age"].kind == "categorical"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # the text column `city` is not flagged
    assert "users.csv" in warnings[0] and "'age'" in warnings[0]
    assert "1 of 12 cells" in warnings[0] and "row 12" in warnings[0] and "'abc'" in warnings[0]
    with caplog.at_level("WARNING", logger="recsys"):
        caplog.clear()
        FeatureTable.from_frame(frame, id_col="user_id", kinds={"age": "categorical"})
    assert not caplog.records  # a declared kind is the user's choice


def test_lists_of_numbers_of_many_lengths_are_not_taken_for_vectors():
    visits = ["1 2", "3 4 5", "6 7 8 9", "1 2", "5 6 7", "2 3", "4 5 6 7", "1 2 3", "8 9", "7 7 7"]
    assert infer_kind(pd.Series(visits)) != "dense"  # no common length: not one broken vector


def test_feature_files_sharing_no_id_with_the_training_data_are_refused(data, tmp_path):
    from recsys.data.files import with_side_files

    (tmp_path / "items.csv").write_text("item_id,genre\nitem_a,x\nitem_b,y\n")
    (tmp_path / "users.csv").write_text("user_id,age\nu1,30\nu2,40\n")
    with pytest.raises(DataError) as err:
        with_side_files(data, item_features=tmp_path / "items.csv")
    assert str(err.value) == (f"{tmp_path / 'items.csv'}: none of its 2 ids is an item of the "
                              "training data (its first: 'item_a'; the data's first: 'a')")
    with pytest.raises(DataError) as err:
        with_side_files(data, user_features=tmp_path / "users.csv")
    assert str(err.value) == (f"{tmp_path / 'users.csv'}: none of its 2 ids is a user of the "
                              "training data (its first: 'u1'; the data's first: 1)")
    # one shared id is enough: the others are cold-start items (or dropped users), as before
    (tmp_path / "items.csv").write_text("item_id,genre\nitem_a,x\nb,y\n")
    assert with_side_files(data, item_features=tmp_path / "items.csv").n_items == 4
