"""GNOLR: ordered probabilities by construction, retrieval through one inner product, scoring
by level, persistence, and the CLI on graded files."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.cli import main
from recsys import create_model, load_model
from recsys.data.simulate import simulate
from recsys.errors import RecsysError
from recsys.models.base import coerce_params, get_model_class

FAST = {"factors": 8, "epochs": 4, "progress": False, "device": "cpu", "valid_frac": 0.0}


@pytest.fixture(scope="module")
def sim():
    return simulate(200, 90, 4000, seed=3)


@pytest.fixture(scope="module")
def nested(sim):
    return create_model("gnolr", **FAST).fit(sim.train)


def cosines(model, users, items):
    """[users, items, heads] cosines of the trained module's heads, from its raw weights."""
    m = model.module_
    u = torch.nn.functional.normalize(m.users().view(-1, m.heads, m.factors), dim=-1)
    v = torch.nn.functional.normalize(m.items().view(-1, m.heads, m.factors), dim=-1)
    return torch.einsum("uhd,ihd->uih", u[users], v[items]).detach()


def test_scores_are_the_cumulative_logits_of_the_deepest_level(nested):
    users, items = np.arange(20), np.arange(30)
    c = cosines(nested, users, items)
    scales = nested.module_.scales
    z = torch.cumsum(c * scales, -1)
    assert torch.allclose(nested.score(users, items), z[..., -1], atol=1e-5)
    assert torch.allclose(nested.score(users, items, grade="click"), z[..., 0], atol=1e-5)
    assert torch.allclose(nested.score(users, items, grade=2), z[..., 1], atol=1e-5)
    # retrieval: the exported factors give the deepest level with one inner product
    assert torch.allclose(nested.user_factors()[users] @ nested.item_factors()[items].T,
                          z[..., -1], atol=1e-5)
    cart = nested.at_level("cart")  # a view ranking by the cart level through its factors
    assert torch.allclose(cart.user_factors()[users] @ cart.item_factors()[items].T,
                          z[..., 1], atol=1e-5)
    assert torch.allclose(nested.score(users, items), z[..., -1], atol=1e-5)  # model unchanged
    p = nested.score(users, items, probabilities=True)
    assert p.shape == (20, 30, 3)
    assert torch.allclose(p, torch.sigmoid(z - nested.thresholds_), atol=1e-6)


def test_a_lowered_scale_is_reported_once_per_fit_with_its_refit(sim, caplog):
    with caplog.at_level(logging.INFO, logger="recsys"):
        model = create_model("gnolr", **{**FAST, "scale": 6.0, "epochs": 2, "valid_frac": 0.1,
                                         "refit": True}).fit(sim.train)
    assert model.fit_info_["scale_lowered"]
    assert sum("scale lowered" in r.getMessage() for r in caplog.records) == 1


def test_level_probabilities_are_ordered_even_when_the_scale_exceeds_the_gaps(sim):
    # base-rate gaps between levels are about 1 here: a scale of 6 must be lowered to fit
    model = create_model("gnolr", **{**FAST, "scale": 6.0, "learn_thresholds": True,
                                     "lr": 0.2, "epochs": 3}).fit(sim.train)
    assert set(model.fit_info_["scale_lowered"]) == {"cart", "purchase"}
    p = model.score(np.arange(200), probabilities=True)
    assert torch.isfinite(p).all() and bool((p[..., 1:] < p[..., :-1]).all())
    gaps = model.thresholds_.diff()
    assert bool((gaps > model.module_.scales[1:]).all())


def test_save_load_keeps_levels_thresholds_and_level_scores(nested, tmp_path):
    nested.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.level_names_ == ("click", "cart", "purchase")
    users = np.arange(50)
    for grade in (None, "cart", 1):
        assert torch.equal(loaded.score(users, grade=grade), nested.score(users, grade=grade))
    assert torch.equal(loaded.score(users, probabilities=True),
                       nested.score(users, probabilities=True))
    with pytest.raises(RecsysError, match="unknown level 'refund'.*click<cart<purchase"):
        loaded.score(users, grade="refund")
    with pytest.raises(RecsysError, match="level 4 outside 1..3"):
        loaded.score(users, grade=4)


def test_baselines_share_the_code_path(sim):
    multi = create_model("gnolr", objective="multitask", hidden=(16,), **FAST).fit(sim.train)
    users, items = np.arange(10), np.arange(15)
    c = cosines(multi, users, items) * multi.module_.scales
    # separate heads: each level ranks by its own head only
    assert torch.allclose(multi.score(users, items, grade="cart"), c[..., 1], atol=1e-5)
    assert torch.allclose(multi.score(users, items), c[..., 2], atol=1e-5)
    binary = create_model("gnolr", objective="binary", grade=2, **FAST).fit(sim.train)
    assert binary.module_.heads == 1 and len(binary.thresholds_) == 1
    assert binary.score(users, items, grade="cart").shape == (10, 15)
    with pytest.raises(RecsysError, match="ranks level 'cart' only"):
        binary.score(users, items, grade="purchase")
    with pytest.raises(RecsysError) as err:  # a nested model learns every level already
        create_model("gnolr", grade=2, **FAST).fit(sim.train)
    assert str(err.value) == ("model 'gnolr': parameter grade=2 applies to objective=binary only; "
                              "a nested model ranks any level when asked (recommend --grade, "
                              "at_level)")
    with pytest.raises(RecsysError, match=r"parameter grade=5: the data has 3 levels \(click<cart"):
        create_model("gnolr", objective="binary", grade=5, **FAST).fit(sim.train)
    # a level by name is that level's number (`--param grade=cart`)
    named = create_model("gnolr", objective="binary", **coerce_params(
        get_model_class("gnolr"), {"grade": "cart"}), **FAST).fit(sim.train)
    assert named.target_ == 2 and torch.equal(named.item_factors(), binary.item_factors())
    assert coerce_params(get_model_class("gnolr"), {"grade": "2"})["grade"] in (2, "2")
    with pytest.raises(RecsysError, match=r"parameter grade='basket': not a level of the data "
                                          r"\(click<cart<purchase\)"):
        create_model("gnolr", objective="binary", grade="basket", **FAST).fit(sim.train)


def test_cli_trains_on_named_event_levels_and_evaluates_by_level(sim, tmp_path, capsys):
    frame = sim.train.to_frame().drop(columns=["rating", "timestamp"])
    events = frame.assign(event=frame.pop("level").astype(str))
    events.to_csv(tmp_path / "events.csv", index=False)
    assert main(["data", "prepare", "--input", str(tmp_path / "events.csv"), "--level-col",
                 "event", "--levels", "click<cart<purchase", "--out", str(tmp_path / "p")]) == 0
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["levels"]["names"] == ["click", "cart", "purchase"]
    assert main(["train", "--model", "gnolr", "--train", str(tmp_path / "p" / "train.parquet"),
                 "--param", "epochs=3", "--param", "factors=8", "--param", "device=cpu",
                 "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--test",
                 str(tmp_path / "p" / "test.parquet"), "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "purchase_ndcg@10" in out and "graded_ndcg@10" in out


def test_cli_reads_a_csv_of_integer_levels(sim, tmp_path):
    frame = sim.train.to_frame().drop(columns=["rating", "timestamp"])
    frame["level"] = frame["level"].cat.codes + 1
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert main(["train", "--model", "gnolr", "--train", str(tmp_path / "train.csv"),
                 "--param", "epochs=2", "--param", "factors=4", "--param", "device=cpu",
                 "--out", str(tmp_path / "m")]) == 0
    assert load_model(tmp_path / "m").level_names_ == ("1", "2", "3")
    pd.DataFrame({"user_id": [0], "item_id": [1], "level": ["buy"]}).to_csv(
        tmp_path / "bad.csv", index=False)
    assert main(["train", "--model", "gnolr", "--train", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "m2")]) == 2


def test_export_and_batch_recommend_from_the_registry(sim, nested, sqlite_store, tmp_path, capsys):
    nested.save(tmp_path / "m", seen=sim.train)
    assert main(["export", "--model", str(tmp_path / "m"), "--name", "graded",
                 "--alias", "champion"]) == 0
    assert main(["recommend", "--model", "models:/graded@champion", "--k", "5",
                 "--out", str(tmp_path / "r.parquet")]) == 0
    recs = pd.read_parquet(tmp_path / "r.parquet").sort_values(["user_id", "rank"])
    top, _ = nested.recommend(np.arange(sim.train.n_users), 5, exclude=sim.train)
    expected = sim.train.item_map.to_ids(top).ravel()
    assert recs["item_id"].tolist() == expected.tolist()


def test_compare_on_a_graded_file_logs_level_metrics(sim, sqlite_store, tmp_path, capsys):
    from mlflow import MlflowClient

    frame = sim.train.to_frame().drop(columns=["rating", "timestamp"])
    frame.rename(columns={"level": "event"}).to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "graded.yaml").write_text(f"""
experiment: graded
data: {{kind: file, path: {tmp_path / 'events.csv'}, level_col: event,
        levels: click<cart<purchase}}
models:
  - name: gnolr
    params: {{epochs: 3, factors: 8, device: cpu}}
    grid: {{objective: [nested, multitask]}}
k: [20]
register_as: graded-model
""")
    assert main(["compare", "--config", str(tmp_path / "graded.yaml")]) == 0
    client = MlflowClient()
    runs = [r for r in client.search_runs([client.get_experiment_by_name("graded").experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"purchase_ndcg_at_20", "cart_recall_at_20", "graded_ndcg_at_20"} <= set(
            run.data.metrics)
    assert "models:/graded-model@champion" in capsys.readouterr().out


def test_batch_pyfunc_and_http_rank_by_a_chosen_grade(sim, nested, sqlite_store, tmp_path,
                                                      free_port, capsys):
    import mlflow
    from http_client import Client, running

    from serving import Settings, create_app
    from serving.loader import load_engine

    k, users = 5, sim.train.user_map.ids[:12].tolist()
    nested.save(tmp_path / "m", seen=sim.train)
    # reference: the cart level's factors, training items masked, ties to the lower index
    scores = (nested.user_factors("cart") @ nested.item_factors().T).numpy()
    scores[sim.train.matrix.toarray() > 0] = -np.inf
    expected = {u: sim.train.item_map.ids[np.argsort(-scores[i], kind="stable")[:k]].tolist()
                for i, u in enumerate(sim.train.user_map.ids)}
    deepest = (nested.user_factors() @ nested.item_factors().T).numpy()
    assert not np.allclose(scores[np.isfinite(scores)], deepest[np.isfinite(scores)])

    for grade in ("cart", "2"):
        assert main(["recommend", "--model", str(tmp_path / "m"), "--grade", grade, "--k", str(k),
                     "--out", str(tmp_path / f"r{grade}.parquet")]) == 0
        recs = pd.read_parquet(tmp_path / f"r{grade}.parquet").sort_values(["user_id", "rank"])
        assert recs.groupby("user_id").item_id.agg(list).to_dict() == expected
    assert main(["recommend", "--model", str(tmp_path / "m"), "--grade", "refund",
                 "--out", str(tmp_path / "x.parquet")]) == 2
    assert "recsys: error: --grade refund: unknown level 'refund'; levels: click<cart<purchase" \
        in capsys.readouterr().err

    assert main(["export", "--model", str(tmp_path / "m"), "--name", "graded",
                 "--alias", "champion"]) == 0
    uri = "models:/graded@champion"
    pyfunc = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"user_id": users}),
                                                   params={"k": k, "grade": "cart"})
    assert pyfunc.groupby("user_id").item_id.agg(list).to_dict() == {u: expected[u] for u in users}

    settings = Settings(model=uri)
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        client = Client(port)
        for user, grade in zip(users, ["cart", 2] * 6, strict=True):
            status, body = client.call("POST", "/recommend", {"user_id": user, "k": k, "grade": grade})
            assert status == 200 and [i["item_id"] for i in body["items"]] == expected[user], user
        status, body = client.call("POST", "/recommend/batch", {"user_ids": users, "k": k,
                                                                "grade": "cart"})
        assert [[i["item_id"] for i in r["items"]] for r in body["results"]] == \
            [expected[u] for u in users]
        status, body = client.call("POST", "/score", {"user_id": users[0], "item_ids": [0, 1],
                                                      "grade": "cart"})
        assert np.allclose([s["score"] for s in body["scores"]],
                           (nested.user_factors("cart")[0] @ nested.item_factors()[:2].T).numpy(),
                           rtol=1e-5)
        bad = [client.call("POST", "/recommend", {"user_id": users[0], "grade": g})
               for g in ("refund", 4, 0, True)]
    assert [s for s, _ in bad] == [422] * 4
    assert bad[0][1]["detail"] == "grade: unknown level 'refund'; levels: click<cart<purchase"
    assert bad[1][1]["detail"] == "grade: level 4 outside 1..3 (click<cart<purchase)"
    assert bad[2][1]["detail"] == "grade: level 0 outside 1..3 (click<cart<purchase)"


def test_a_grade_for_a_model_without_grades_is_an_error(sim, tmp_path, capsys):
    from serving.engine import Engine, RequestError

    pop = create_model("pop").fit(sim.train)
    with pytest.raises(RequestError, match="grade: pop model has no grades to rank by"):
        Engine(pop, sim.train).at_grade("purchase")
    pop.save(tmp_path / "pop", seen=sim.train)
    assert main(["recommend", "--model", str(tmp_path / "pop"), "--grade", "purchase",
                 "--out", str(tmp_path / "r.parquet")]) == 2
    assert "--grade purchase: pop model has no grades to rank by" in capsys.readouterr().err


def test_new_users_fold_in_against_the_heads_of_the_ranking_level(sim, nested):
    history = sim.train.matrix[:3]
    for grade in ("click", "cart", None):
        view = nested.at_level(grade)
        vectors = view.user_vectors(history=history).view(3, 3, -1)
        used = nested._mix(3)[nested._head_of(grade)]
        # the heads the level does not sum stay 0; the others do not
        assert (vectors[:, used == 0] == 0).all() and (vectors[:, used == 1] != 0).any()
