"""Two-tower model: features, SSL loss parts, cold-start items, new users, save/load, CLI."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recsys import Interactions, create_model, load_model
from recsys.data.features import FeatureTable
from recsys.data.idmap import IdMap
from recsys.errors import RecsysError
from recsys.models.two_tower import padded_history

FAST = {"dim": 8, "hidden": (16, 8), "epochs": 3, "lr": 0.01, "progress": False,
        "device": "cpu", "valid_frac": 0.0, "history": 5}


def item_frame(data: Interactions, cold: int = 2) -> pd.DataFrame:
    """Features of every item plus `cold` items without interactions (the last two share
    their features)."""
    rng = np.random.default_rng(0)
    ids = [*data.item_map.ids, *(f"cold{i}" for i in range(cold))]
    genre = rng.choice(["a", "b", "c"], len(ids))
    tags = ["|".join(rng.choice(["x", "y", "z", "w"], 2, replace=False)) for _ in ids]
    year = rng.integers(1980, 2000, len(ids)).astype(float)
    genre[-1], tags[-1], year[-1] = genre[-2], tags[-2], year[-2]
    return pd.DataFrame({"item_id": ids, "genre": genre, "tags": tags, "year": year})


def user_frame(data: Interactions) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"user_id": data.user_map.ids,
                         "gender": rng.choice(["f", "m"], data.n_users)})


@pytest.fixture(scope="module")
def featured(small_data):
    trained = small_data.item_map.ids
    items = FeatureTable.from_frame(item_frame(small_data), "item_id", fit_ids=trained)
    users = FeatureTable.from_frame(user_frame(small_data), "user_id")
    return small_data.with_item_features(items, extend_catalogue=True).with_user_features(users)


@pytest.fixture(scope="module")
def cfm_model(featured):
    return create_model("two_tower", ssl="cfm", **FAST).fit(featured)


def test_padded_history_keeps_the_latest_items():
    rows = np.array([0, 0, 0, 1])
    cols = np.array([2, 0, 1, 3])
    times = np.array([30.0, 10.0, 20.0, 5.0])
    shape = (2, 4)
    data = Interactions(sp.csr_matrix((np.ones(4, np.float32), (rows, cols)), shape=shape),
                        IdMap(["u0", "u1"]), IdMap(["i0", "i1", "i2", "i3"]),
                        timestamps=sp.csr_matrix((times, (rows, cols)), shape=shape))
    # user 0: items 2 (t=30), 1 (t=20), 0 (t=10) -> the latest two, as index + 1
    assert padded_history(data, 2, seed=0).tolist() == [[3, 2], [4, 0]]


def test_ssl_adds_a_logged_loss_part_and_cold_items_are_scored(cfm_model, featured):
    model = cfm_model
    assert {"main", "ssl"} <= set(model.history_[-1]) and model.history_[-1]["ssl"] > 0
    assert set(model.fit_info_["cfm_groups"]) == {"id", "genre", "tags", "year"}
    factors = model.item_factors()
    assert factors.shape[0] == featured.n_items == featured.matrix.shape[1]
    cold = featured.item_map.index_of(np.array(["cold0", "cold1"]))
    assert (featured.item_popularity[cold] == 0).all()
    # cold items are scored from their features alone: same features, same vector
    assert torch.allclose(factors[cold[0]], factors[cold[1]])
    assert torch.isfinite(factors).all()
    assert torch.allclose(factors.norm(dim=1), torch.ones(len(factors)), atol=1e-5)
    top, _ = model.recommend(np.arange(featured.n_users), featured.n_items, exclude=featured)
    assert np.isin(cold, top).all()


def test_ssl_needs_item_features(small_data):
    with pytest.raises(RecsysError, match="ssl=rfm masks item features"):
        create_model("two_tower", ssl="rfm", **FAST).fit(small_data)


def test_text_columns_the_towers_cannot_read_are_named(small_data, caplog):
    frame = item_frame(small_data, cold=0)
    frame["title"] = [f"the story of item {i} and its many friends" for i in range(len(frame))]
    items = FeatureTable.from_frame(frame, "item_id")
    assert items.kinds["title"] == "text"
    with caplog.at_level("WARNING", logger="recsys"):
        model = create_model("two_tower", **{**FAST, "epochs": 1}).fit(
            small_data.with_item_features(items))
    assert model.fit_info_["columns_left_out"] == ["item.title"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "two_tower: feature column(s) item.title hold free text, which the towers do not read "
        "(encode it into a dense column first); left out"]


def test_rfm_and_uniform_negatives_train(featured):
    model = create_model("two_tower", ssl="rfm", negatives=32, **FAST).fit(featured)
    losses = [h["main"] for h in model.history_]
    assert losses[-1] < losses[0]


def test_new_users_from_features_and_history_survive_save_load(cfm_model, featured, tmp_path):
    table = cfm_model.features_["user_features"].encode(
        pd.DataFrame({"user_id": ["new1", "new2"], "gender": ["f", "unknown"]}), "user_id")
    history = [list(featured.matrix[0].indices), []]
    vectors = cfm_model.user_vectors(features=table, history=history)
    assert vectors.shape == (2, cfm_model.item_factors().shape[1])
    assert not torch.allclose(vectors[0], vectors[1])
    only_history = cfm_model.user_vectors(history=history)
    assert not torch.allclose(only_history[0], vectors[0])  # the features count
    other = cfm_model.user_vectors(features=table, history=[history[0][:3], []])
    assert not torch.allclose(other[0], vectors[0]) and torch.allclose(other[1], vectors[1])
    cfm_model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert torch.equal(loaded.item_factors(), cfm_model.item_factors())
    assert torch.allclose(loaded.user_vectors(features=table, history=history), vectors)
    with pytest.raises(RecsysError, match="needs user features, a history, or both"):
        loaded.user_vectors()
    with pytest.raises(RecsysError, match="outside the catalogue"):
        loaded.user_vectors(history=[[10**6]])


def test_cli_trains_two_tower_with_feature_files(featured, small_log, tmp_path):
    from pipelines.cli import main

    test = small_log.groupby("user_id").tail(1)  # evaluated on pairs it did not train on
    small_log.drop(test.index).to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    data = Interactions.from_frame(small_log)
    item_frame(data).to_csv(tmp_path / "items.csv", index=False)
    user_frame(data).to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "model"
    params = [p for k, v in {**FAST, "ssl": "cfm", "hidden": "16,8"}.items()
              for p in ("--param", f"{k}={v}")]
    assert main(["train", "--model", "two_tower", "--train", str(tmp_path / "train.csv"),
                 "--item-features", str(tmp_path / "items.csv"), "--user-features",
                 str(tmp_path / "users.csv"), *params, "--out", str(out)]) == 0
    model = load_model(out)
    assert model.ssl == "cfm" and len(model.item_map_) == data.n_items + 2
    assert set(model.features_) == {"item_features", "user_features"}
    assert model.features_["user_features"]["gender"].vocab.values == ["f", "m"]
    assert main(["evaluate", "--model", str(out), "--test", str(tmp_path / "test.csv"),
                 "--k", "10"]) == 0


def test_the_ranker_answers_new_users_from_request_features(cfm_model, featured):
    from recsys.inference import Query, Ranker

    ranker = Ranker(cfm_model, featured)
    history = featured.item_map.ids[featured.matrix[0].indices[:3]].tolist()
    by_features, both, neither = ranker.rank([Query("new1", features={"gender": "f"}, k=5),
                                               Query("new2", features={"gender": "f"}, history=history, k=5),
                                               Query("new3", k=5)])
    assert by_features.folded_in and both.folded_in and neither.fallback
    table = cfm_model.features_["user_features"].encode(
        pd.DataFrame({"user_id": ["new1"], "gender": ["f"]}), "user_id")
    scores = (cfm_model.item_factors() @ cfm_model.user_vectors(features=table)[0]).numpy()
    expected = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:5]
    assert by_features.item_ids == featured.item_map.ids[expected].tolist()
    assert not set(history) & set(both.item_ids)  # the history counts as seen


def test_ssl_items_are_drawn_uniformly_from_the_catalogue(cfm_model, featured):
    # the training stream is skewed and never holds cold items; the SSL draw is uniform
    cfm_model.generator_.manual_seed(0)
    n = 200 * featured.n_items
    items, mask = cfm_model._ssl_views(n)
    counts = np.bincount(items.numpy(), minlength=featured.n_items)
    assert np.abs(counts / 200 - 1).max() < 0.4  # binomial sd 0.07: far inside
    popularity = featured.item_popularity
    assert popularity.max() > 5 * popularity[popularity > 0].min()
    assert (counts[popularity == 0] > 100).all()
    # view 1 masks one CFM group (id included in the fields), view 2 its complement
    groups = cfm_model.cfm_groups_
    assert (mask[:, None, :] == groups[None]).all(-1).any(1).all()
    assert (~mask).any(1).all() and mask.any(1).all()


def test_masked_fields_read_the_default_vector(cfm_model, featured):
    tower = cfm_model.module_.item
    with torch.no_grad():
        tower.default.normal_()
    cold = torch.as_tensor(featured.item_map.index_of(np.array(["cold0", "cold1"])))
    warm = torch.tensor([0, 1])
    features = cfm_model.item_data_.batch(torch.cat([warm, cold]))
    rows = torch.tensor([1, 2, 0, 0])  # two items by id, two cold items (unknown id)
    every = torch.ones(4, tower.n_fields, dtype=torch.bool)
    with torch.no_grad():
        out = tower(rows, features, mask=every)
        assert torch.allclose(out, out[:1].expand(4, -1))  # nothing of the item is left
        only_id = torch.zeros_like(every)
        only_id[:, 0] = True
        out = tower(rows, features, mask=only_id)
        # the two cold items share their features; with the id masked, so do two warm items
        # only when their features agree, which these do not
        assert torch.allclose(out[2], out[3]) and not torch.allclose(out[0], out[1])
        twin = {k: v[[0, 0]] for k, v in features.items()}
        out = tower(torch.tensor([1, 2]), twin, mask=only_id[:2])
        assert torch.allclose(out[0], out[1])  # same features, different ids: id masked
        assert not torch.allclose(*tower(torch.tensor([1, 2]), twin))  # unmasked: ids differ


def batch_of_pairs(data: Interactions, n: int, users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training pairs of the first `users` users, in a random order: rows share users, so
    a row's negatives include some of its user's other training items (accidental hits)."""
    rows, cols = data.coo
    pick = np.random.default_rng(0).choice(np.flatnonzero(rows < users), n, replace=False)
    return torch.as_tensor(rows[pick]), torch.as_tensor(cols[pick])


def test_logq_acts_on_the_main_loss_only_and_alpha_scales_the_ssl_part(cfm_model, featured):
    users, items = batch_of_pairs(featured, 64, 100)

    def parts(**settings):
        saved = {k: getattr(cfm_model, k) for k in settings}
        for k, v in settings.items():
            setattr(cfm_model, k, v)
        cfm_model.generator_.manual_seed(3)
        with torch.no_grad():
            out = cfm_model.loss(users, items)
        for k, v in saved.items():
            setattr(cfm_model, k, v)
        return out

    base = parts(logq=True, alpha=0.2)
    plain = parts(logq=False, alpha=0.2)
    heavy = parts(logq=True, alpha=1.0)
    assert torch.equal(base["ssl"], plain["ssl"]) and not torch.isclose(base["main"], plain["main"])
    assert torch.equal(base["main"], heavy["main"])
    assert torch.isclose(heavy["ssl"], 5 * base["ssl"])


def test_the_users_other_training_items_are_not_in_batch_negatives(cfm_model, featured):
    """Row i's negatives leave out every candidate that is one of user i's training items
    (other than its own target), as well as copies of its target."""
    import torch.nn.functional as F

    users, items = batch_of_pairs(featured, 32, 8)
    positive = featured.matrix[users.numpy()][:, items.numpy()].toarray() > 0
    assert 32 < positive.sum() < 32 * 31  # the batch holds accidental hits, and negatives
    tower = cfm_model.module_
    saved = cfm_model.id_dropout, cfm_model.logq, cfm_model.mask_positives
    cfm_model.id_dropout, cfm_model.logq = 0.0, False
    try:
        with torch.no_grad():
            history = cfm_model.histories_[users]
            history = history.masked_fill(history == items[:, None] + 1, 0)
            q = tower.query(cfm_model.user_rows_[users], cfm_model._user_batch(users), history)
            v = tower.item(cfm_model.item_rows_[items], cfm_model._item_batch(items))
            logits = q @ v.T / cfm_model.temperature
            blocked = torch.as_tensor(positive) | (items[:, None] == items[None, :])
            blocked.fill_diagonal_(False)
            target = torch.arange(len(items))
            expected = F.cross_entropy(logits.masked_fill(blocked, float("-inf")), target)
            copies_only = (items[:, None] == items[None, :]).fill_diagonal_(False)
            unmasked = F.cross_entropy(logits.masked_fill(copies_only, float("-inf")), target)
            for mask, want in ((True, expected), (False, unmasked)):
                cfm_model.mask_positives = mask
                assert torch.isclose(cfm_model.loss(users, items)["main"], want, rtol=1e-5)
    finally:
        cfm_model.id_dropout, cfm_model.logq, cfm_model.mask_positives = saved
    assert not torch.isclose(expected, unmasked)
