"""A model trained at density 0.2, loaded from its folder, holds CSR factor tables (the bytes CSR
predicts, no dense copy) and answers every consumer as the dense model does: the HTTP endpoints
(real servers on 127.0.0.1), `recsys recommend`, evaluation and the pyfunc model."""

import socket
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from http_client import Client, running

from pipelines.cli import main
from recsys import create_model, load_model
from recsys.evaluate.evaluator import evaluate
from recsys.factor_table import csr_bytes
from recsys.inference import Ranker
from serving import Settings, create_app
from serving.engine import Engine
from serving.loader import load_engine


@pytest.fixture(scope="module")
def trained(small_data):
    """mf at density 0.2, as training leaves it: dense tensors, 80% zeros."""
    return create_model("mf", density=0.2, factors=16, epochs=3, progress=False,
                        prune_every=20).fit(small_data)


@pytest.fixture(scope="module")
def folder(trained, small_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse") / "mf"
    trained.save(path, seen=small_data)
    return path


def other_port(taken):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != taken else other_port(taken)


def test_loaded_tables_are_csr_and_hold_the_bytes_csr_predicts(trained, folder):
    loaded = load_model(folder)
    dense = [trained.user_factors_.numpy(), trained.item_factors_.numpy()]
    for table, reference in zip(loaded.factor_tables(), dense, strict=True):
        assert table.is_sparse
        nnz = int((reference != 0).sum())
        assert 0 < nnz <= 0.2 * reference.size + 1
        assert table.nbytes == csr_bytes(len(reference), nnz) == nnz * 8 + (len(reference) + 1) * 4
        assert table.nbytes < 0.5 * reference.nbytes  # 0.2 x 8 bytes + a 4-byte pointer per row
        assert np.array_equal(table.dense().numpy(), reference)
    ranker = Ranker(loaded)
    assert ranker.factors[0] is loaded.tables_[0] and ranker.factors[1] is loaded.tables_[1]


def ids(answer):
    return [i["item_id"] for i in answer["items"]]


def scores(answer):
    return [i["score"] for i in answer["items"]]


def same(a, b):
    """Two HTTP answers agree: status, item ids, flags, and scores to float tolerance."""
    (status_a, body_a), (status_b, body_b) = a, b
    assert status_a == status_b == 200
    for key in ("fallback", "folded_in", "unknown_item_ids", "item_id"):
        assert body_a.get(key) == body_b.get(key)
    if "items" in body_a:
        assert ids(body_a) == ids(body_b)
        assert np.allclose(scores(body_a), scores(body_b), rtol=1e-5, atol=1e-6)
    if "scores" in body_a:
        assert [s["item_id"] for s in body_a["scores"]] == [s["item_id"] for s in body_b["scores"]]
        assert np.allclose([s["score"] for s in body_a["scores"]],
                           [s["score"] for s in body_b["scores"]], rtol=1e-5, atol=1e-6)
    if "results" in body_a:
        for x, y in zip(body_a["results"], body_b["results"], strict=True):
            same((200, x), (200, y))


def test_every_endpoint_answers_as_the_dense_model_over_http(trained, folder, small_data, free_port):
    users = small_data.user_map.ids[:4].tolist()
    items = small_data.item_map.ids.tolist()
    history = items[:12:3]
    requests = [
        ("POST", "/recommend", {"user_id": users[0], "k": 10}),
        ("POST", "/recommend", {"user_id": users[1], "k": 5, "item_ids": items[::4],
                                "exclude_item_ids": items[:8]}),
        ("POST", "/recommend", {"user_id": "new", "history": history, "k": 10}),
        ("POST", "/recommend", {"user_id": "nobody", "k": 5}),
        ("POST", "/recommend/batch", {"user_ids": [*users, "new", "nobody"], "k": 6,
                                      "history": {"new": history}}),
        ("POST", "/score", {"user_id": users[2], "item_ids": [items[5], items[0], items[5], "x"]}),
        ("POST", "/score", {"user_id": "new", "history": history, "item_ids": items[:6]}),
        *[("GET", f"/similar/{item}?k=8", None) for item in items[:5]],
    ]
    dense_engine = Engine(trained, small_data, version="dense")
    sparse_settings = Settings(model=str(folder))
    sparse_engine = load_engine(sparse_settings)
    assert sparse_engine.item_table.is_sparse and not dense_engine.item_table.is_sparse
    with running(create_app(Settings(model=str(folder)), dense_engine), free_port) as a, \
            running(create_app(sparse_settings, sparse_engine), other_port(free_port)) as b:
        dense, sparse = Client(a), Client(b)
        for method, path, body in requests:
            same(dense.call(method, path, body), sparse.call(method, path, body))
        assert sparse.call(*requests[2])[1]["folded_in"]
        ready_dense, ready_sparse = dense.call("GET", "/readyz")[1], sparse.call("GET", "/readyz")[1]
        status, body = sparse.call("POST", "/score", requests[5][2])
        status_sim, similar = sparse.call("GET", f"/similar/{items[3]}?k=8")
    u = trained.user_factors_.numpy()
    v = trained.item_factors_.numpy()
    assert ready_dense["factor_bytes"] == u.nbytes + v.nbytes
    assert ready_sparse["factor_bytes"] == sum(t.nbytes for t in sparse_engine.ranker.factors)
    assert ready_sparse["factor_bytes"] < 0.5 * ready_dense["factor_bytes"]
    # brute force on the dense factors: dot products, and cosine similarity
    row = u[small_data.user_map.index_of([users[2]])[0]]
    picked = small_data.item_map.index_of([items[5], items[0], items[5]])
    assert np.allclose([s["score"] for s in body["scores"]], v[picked] @ row, rtol=1e-5, atol=1e-6)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit[3]
    cosine[3] = -np.inf
    assert status_sim == 200
    assert np.allclose(scores(similar), np.sort(cosine)[::-1][:8], atol=1e-5)


def test_recommend_evaluate_and_pyfunc_match_the_dense_model(trained, folder, small_data, tmp_path):
    from pipelines.pyfunc_model import RecsysModel

    users = np.arange(small_data.n_users)
    reference = Ranker(trained, small_data).recommend(users, 5)
    # recsys recommend (seen items from the folder)
    assert main(["recommend", "--model", str(folder), "--k", "5", "--out",
                 str(tmp_path / "r.parquet")]) == 0
    recs = pd.read_parquet(tmp_path / "r.parquet")
    got = recs.sort_values(["user_id", "rank"]).groupby("user_id", sort=False)["item_id"].agg(list)
    expected = pd.Series([small_data.item_map.to_ids(r[np.isfinite(v)]).tolist()
                          for r, v in zip(reference.items, reference.scores, strict=True)],
                         index=small_data.user_map.ids)  # a user may have < 5 unseen items
    assert got.to_dict() == {user: top for user, top in expected.items() if top}
    # evaluation (here of the training pairs, nothing excluded)
    loaded = load_model(folder)
    assert evaluate(loaded, small_data, k=[5, 10]) == pytest.approx(
        evaluate(trained, small_data, k=[5, 10]), rel=1e-6)
    # the pyfunc model, with a known user and a new user folded in from a history
    wrapper = RecsysModel()
    wrapper.load_context(SimpleNamespace(artifacts={"model": str(folder)}))
    assert wrapper.model.tables_[1].is_sparse
    history = small_data.item_map.ids[:12:3].tolist()
    frame = pd.DataFrame({"user_id": [small_data.user_map.ids[0], "new"],
                          "history": [None, history]})
    out = wrapper.predict(None, frame, {"k": 5})
    ref = Ranker(trained, small_data).recommend(
        np.array([0, -1]), 5, history=_history(small_data, history))
    assert out[out.user_id == "new"].item_id.tolist() == small_data.item_map.to_ids(
        ref.items[1]).tolist()
    assert out[out.user_id == small_data.user_map.ids[0]].item_id.tolist() == \
        small_data.item_map.to_ids(ref.items[0]).tolist()


def _history(data, item_ids):
    from recsys.inference import history_matrix

    return history_matrix([None, item_ids], data.item_map)[0]
