"""The scoring endpoint: engine results against the in-process model, and real HTTP on
127.0.0.1 (bad requests, concurrent load, reloads under load, the CLI from the registry)."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from http_client import Client, running

from recsys import create_model, load_model
from recsys.models.base import save_seen
from serving import Settings, create_app
from serving.engine import Engine, Query, RequestError
from serving.loader import load_engine

K = 7


@pytest.fixture(scope="module")
def als(small_data):
    return create_model("als", factors=16, iterations=5).fit(small_data)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, small_data, als):
    """Two different saved models over the same data, with their seen items."""
    root = tmp_path_factory.mktemp("models")
    other = create_model("als", factors=8, iterations=3, regularization=1.0).fit(small_data)
    for name, model in (("a", als), ("b", other)):
        model.save(root / name)
        save_seen(root / name, small_data)
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def attributes(small_data):
    ids = small_data.item_map.ids
    genre = np.array(["rock", "jazz|rock", "pop", ""], dtype=object)[np.arange(len(ids)) % 4]
    shop = np.where(np.arange(len(ids)) % 3 == 0, "north", "south")
    return pd.DataFrame({"item_id": ids, "genre": genre, "shop": shop})


@pytest.fixture(scope="module")
def engine(als, small_data, attributes):
    return Engine(als, small_data, version="v1", source="test", attributes=attributes)


def expected_top(model, data, users, k, items=None):
    """Reference: the model's own torch top-k with training items excluded."""
    idx = data.user_map.index_of(users)
    top, scores = model.recommend(idx, k, exclude=data, items=items)
    return [data.item_map.to_ids(row[np.isfinite(s)]).tolist() for row, s in zip(top, scores, strict=True)]


# ---- engine ---------------------------------------------------------------------------------
def test_engine_top_k_matches_the_model(engine, als, small_data, monkeypatch):
    users = small_data.user_map.ids[:25].tolist()
    got = [r.item_ids for r in engine.recommend_many(users, K)]
    assert got == expected_top(als, small_data, users, K)
    monkeypatch.setattr("recsys.ranking.MAX_BLOCK_SCORES", 2 * small_data.n_items)  # blocks of 2 users
    mixed = engine.recommend_many([*users[:5], "nobody"], K)
    assert [r.item_ids for r in mixed[:5]] == got[:5] and mixed[5].fallback
    one = engine.recommend(users[0], K)
    ref = als.score(small_data.user_map.index_of(users[:1]))[0].numpy()
    assert np.allclose(one.scores, ref[small_data.item_map.index_of(one.item_ids)], atol=1e-5)
    row = small_data.matrix[small_data.user_map.index_of(users[:1])[0]]
    seen = set(small_data.item_map.to_ids(row.indices))
    assert seen and not seen & set(one.item_ids)
    unfiltered = engine.recommend(users[0], len(small_data.item_map), exclude_seen=False)
    assert len(unfiltered.item_ids) == len(small_data.item_map)


def test_engine_candidates_exclusions_and_unknown_items(engine, als, small_data):
    user = small_data.user_map.ids[3]
    cand_idx = np.arange(0, small_data.n_items, 5)
    cand = small_data.item_map.to_ids(cand_idx).tolist()
    got = engine.recommend(user, K, item_ids=[*cand, "no-such-item", cand[0]])
    assert got.item_ids == expected_top(als, small_data, [user], K, items=cand_idx)[0]
    assert got.unknown_item_ids == ["no-such-item"]
    blocked = got.item_ids[:2]
    again = engine.recommend(user, K, item_ids=cand, exclude_item_ids=blocked)
    assert not set(blocked) & set(again.item_ids) and again.item_ids[:K - 2] == got.item_ids[2:]
    assert engine.recommend(user, K, item_ids=[]).item_ids == []


def test_engine_filters_match_a_brute_force_selection(engine, attributes):
    user = engine.users.ids[0]
    got = engine.recommend(user, 1000, exclude_seen=False, filters={"genre": ["rock"], "shop": ["north"]})
    rock = attributes.genre.str.split("|").apply(lambda values: "rock" in values)
    allowed = set(attributes.item_id[rock & (attributes.shop == "north")])
    assert set(got.item_ids) == allowed
    assert engine.recommend(user, 5, filters={"genre": ["nothing"]}).item_ids == []
    with pytest.raises(RequestError, match="unknown item attribute 'colour'; known: genre, shop"):
        engine.recommend(user, 5, filters={"colour": ["red"]})


def test_engine_fallback_score_and_similar(engine, als, small_data):
    fallback = engine.recommend("someone-new", 5)
    popularity = small_data.item_popularity
    assert fallback.fallback and fallback.scores == sorted(popularity, reverse=True)[:5]
    user = small_data.user_map.ids[0]
    items = small_data.item_map.ids[[4, 2, 9]].tolist()
    scored = engine.score(user, [*items, "nope"])
    ref = als.score(small_data.user_map.index_of([user]), np.array([4, 2, 9]))[0].numpy()
    assert scored.item_ids == items and np.allclose(scored.scores, ref, atol=1e-5)
    assert scored.unknown_item_ids == ["nope"]
    factors = als.item_factors().numpy()
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit[10]
    cosine[10] = -np.inf
    similar = engine.similar(small_data.item_map.ids[10], 4)
    assert similar.item_ids == small_data.item_map.to_ids(np.argsort(-cosine)[:4]).tolist()
    with pytest.raises(RequestError, match="unknown item_id"):
        engine.similar("nope", 3)


@pytest.mark.parametrize("name, params", [
    ("mf", {"item_bias": True, "epochs": 3}),
    ("mf", {"item_bias": True, "epochs": 3, "density": 0.2}),  # loaded back as CSR tables
    ("bpr", {"iterations": 20}),  # implicit's BPR also ends in an item-bias column
])
def test_similar_leaves_item_biases_out(small_data, tmp_path, name, params):
    """/similar is the cosine of the item factors without the bias column (matched by the
    users' column of ones): unchanged when every bias moves by the same amount, which changes
    no user's ranking."""
    model = create_model(name, factors=16, progress=False, **params).fit(small_data)
    model.save(tmp_path / "m", seen=small_data)
    model = load_model(tmp_path / "m")
    assert model.fixed_user_columns == 1
    assert model.factor_tables()[1].is_sparse == ("density" in params)
    factors = model.item_factors().numpy()
    taste = factors[:, :-1]
    unit = taste / np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit[10]
    cosine[10] = -np.inf
    expected = small_data.item_map.to_ids(np.argsort(-cosine, kind="stable")[:5]).tolist()
    item = small_data.item_map.ids[10]
    got = Engine(model, small_data).similar(item, 5)
    assert got.item_ids == expected
    assert np.allclose(got.scores, np.sort(cosine)[::-1][:5], atol=1e-5)
    shifted = factors.copy()
    shifted[:, -1] += 3.0
    model._set_factors(model.user_factors(), shifted)
    assert Engine(model, small_data).similar(item, 5).item_ids == expected


def test_engine_serves_models_without_factors(small_data):
    pop = Engine(create_model("pop").fit(small_data), small_data)
    users = small_data.user_map.ids[1:4].tolist()
    got = pop.recommend_many([*users, "nobody"], K)
    popularity = small_data.item_popularity
    for user, ranked in zip(users, got[:3], strict=True):  # brute force: most popular unseen, ties by index
        seen = set(small_data.matrix[small_data.user_map.index_of([user])[0]].indices)
        unseen = (i for i in range(small_data.n_items) if i not in seen)
        order = sorted(unseen, key=lambda i: (-popularity[i], i))
        assert ranked.item_ids == small_data.item_map.to_ids(order[:K]).tolist()
    assert got[3].fallback and len(got[3].item_ids) == K
    with pytest.raises(RequestError, match="need item factors") as err:
        pop.similar(small_data.item_map.ids[0], 3)
    assert err.value.status == 501


def test_integer_ids_accept_json_numbers_and_text(tmp_path):
    from recsys import Interactions

    frame = pd.DataFrame({"user_id": [10, 10, 20, 30], "item_id": [1, 2, 2, 3]})
    data = Interactions.from_frame(frame)
    engine = Engine(create_model("pop").fit(data), data)
    assert engine.recommend(10, 3).item_ids == engine.recommend("10", 3).item_ids == [3]
    assert not engine.recommend(10, 3).fallback and engine.recommend("010", 3).fallback


def test_similar_names_the_item_with_the_model_id_type(tmp_path, free_port):
    from recsys import Interactions

    frame = pd.DataFrame({"user_id": [10, 10, 20, 20, 30], "item_id": [1, 2, 2, 3, 3]})
    data = Interactions.from_frame(frame)
    create_model("als", factors=2, iterations=2, progress=False).fit(data).save(tmp_path / "m")
    save_seen(tmp_path / "m", data)
    settings = Settings(model=str(tmp_path / "m"))
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        status, body = Client(port).call("GET", "/similar/2?k=2")
    assert status == 200 and body["item_id"] == 2
    assert sorted(i["item_id"] for i in body["items"]) == [1, 3]


def test_concurrent_requests_share_one_product(engine, small_data):
    import asyncio

    from serving.batcher import RecommendBatcher

    calls = []
    original = engine.recommend_each

    def counting(queries):
        calls.append(len(queries))
        return original(queries)

    users = [*small_data.user_map.ids[:9].tolist(), "nobody"]

    batcher = RecommendBatcher()

    async def burst():
        try:
            return await asyncio.gather(*(batcher.recommend(engine, Query(u, k=3 + i % 2,
                                                                          exclude_seen=i % 3 > 0))
                                          for i, u in enumerate(users)))
        finally:
            await batcher.stop()

    engine.recommend_each = counting
    try:
        answers = asyncio.run(burst())
        again = asyncio.run(burst())  # a new event loop: the batcher starts over on it
    finally:
        del engine.recommend_each
    assert calls == [len(users)] * 2 and [a.item_ids for a in again] == [a.item_ids for a in answers]
    for i, (user, answer) in enumerate(zip(users, answers, strict=True)):
        alone = engine.recommend(user, 3 + i % 2, exclude_seen=i % 3 > 0)
        assert answer.item_ids == alone.item_ids and answer.fallback == alone.fallback
        assert np.allclose(answer.scores, alone.scores, rtol=1e-5)


# ---- HTTP -----------------------------------------------------------------------------------
@pytest.fixture
def server(model_dirs, free_port, attributes, tmp_path):
    attributes.to_csv(tmp_path / "attributes.csv", index=False)
    settings = Settings(model=str(model_dirs[0]), max_k=50, max_batch_users=10, admin_token="s3cret",
                        item_attributes=str(tmp_path / "attributes.csv"))
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        yield Client(port)


def test_http_endpoints(server, als, small_data):
    users = small_data.user_map.ids[:3].tolist()
    status, body = server.call("POST", "/recommend", {"user_id": users[0], "k": K})
    assert status == 200 and not body["fallback"] and body["model_version"].startswith("sha256:")
    assert [i["item_id"] for i in body["items"]] == expected_top(als, small_data, users[:1], K)[0]
    assert [i["rank"] for i in body["items"]] == list(range(1, K + 1))
    status, body = server.call("POST", "/recommend/batch", {"user_ids": [*users, "new"], "k": 3})
    assert status == 200 and [r["fallback"] for r in body["results"]] == [False, False, False, True]
    assert [[i["item_id"] for i in r["items"]] for r in body["results"][:3]] == expected_top(
        als, small_data, users, 3)
    item = small_data.item_map.ids[0]
    status, body = server.call("POST", "/score", {"user_id": users[0], "item_ids": [item, "x"]})
    assert status == 200 and body["unknown_item_ids"] == ["x"] and len(body["scores"]) == 1
    status, body = server.call("GET", f"/similar/{item}?k=3")
    assert status == 200 and len(body["items"]) == 3 and item not in [i["item_id"] for i in body["items"]]
    status, body = server.call("POST", "/recommend",
                               {"user_id": users[0], "k": 4, "filters": {"shop": ["north"]}})
    north = small_data.item_map.index_of([i["item_id"] for i in body["items"]]) % 3 == 0
    assert status == 200 and len(north) == 4 and north.all()
    assert server.call("GET", "/healthz") == (200, {"status": "ok"})
    status, body = server.call("GET", "/readyz")
    assert status == 200 and body["model"] == "als" and body["n_items"] == small_data.n_items
    status, spec = server.call("GET", "/openapi.json")
    paths = {"/recommend", "/recommend/batch", "/score", "/similar/{item_id}", "/admin/reload"}
    assert status == 200 and paths <= set(spec["paths"])
    status, text = server.call("GET", "/metrics")
    assert status == 200
    assert 'recsys_requests_total{endpoint="/recommend",method="POST",status="200"} 2.0' in text
    assert 'recsys_requests_total{endpoint="/similar/{item_id}",method="GET",status="200"} 1.0' in text
    assert "recsys_fallback_users_total 1.0" in text
    assert 'recsys_request_duration_seconds_bucket{endpoint="/score",le="+Inf"} 1.0' in text
    assert 'recsys_model_info{model="als"' in text


@pytest.mark.parametrize("path, body, status, needle", [
    ("/recommend", b'{"user_id": "u1", "k": ', 422, "JSON decode error"),
    ("/recommend", {"user_id": ["u1"]}, 422, "user_id"),
    ("/recommend", {"user_id": "u1", "k": "ten"}, 422, "valid integer"),
    ("/recommend", {"user_id": "u1", "k": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"user_id": "u1", "k": True}, 422, "valid integer"),
    ("/recommend", {"user_id": "u1", "exclude_seen": "yes"}, 422, "valid boolean"),
    ("/recommend/batch", {"user_ids": ["u1"], "history": {"u2": ["x"]}}, 422,
     "history: user id 'u2' is not one of user_ids"),
    ("/recommend/batch", {"user_ids": [1], "features": {"u1": {"age": 3}}}, 422,
     "features: user id 'u1' is not one of user_ids"),
    ("/recommend", {"user_id": "u1", "k": 10**9}, 422, "k: 1000000000 exceeds this server's max_k of 50"),
    ("/recommend", {"user_id": "u1", "top_k": 3}, 422, "Extra inputs are not permitted"),
    ("/recommend", {"k": 3}, 422, "Field required"),
    ("/recommend", {"user_id": "u1", "filters": {"colour": ["red"]}}, 422, "unknown item attribute"),
    ("/recommend/batch", {"user_ids": []}, 422, "at least 1 item"),
    ("/recommend/batch", {"user_ids": list(range(11))}, 422, "max_batch_users of 10"),
    ("/score", {"user_id": "u1"}, 422, "item_ids"),
    ("/similar/no-such-item", None, 404, "unknown item_id 'no-such-item'"),
    ("/similar/x?k=51", None, 422, "max_k of 50"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_a_reason(server, path, body, status, needle):
    method = "GET" if body is None else "POST"
    got, answer = server.call(method, path, raw=body if isinstance(body, bytes) else None,
                              body=None if isinstance(body, bytes) else body)
    assert got == status and needle in json.dumps(answer)


def test_empty_candidates_and_unknown_items_are_answered(server, small_data):
    user = small_data.user_map.ids[0]
    status, body = server.call("POST", "/recommend", {"user_id": user, "item_ids": []})
    assert status == 200 and body["items"] == []
    status, body = server.call("POST", "/recommend", {"user_id": user, "item_ids": ["a", "b"]})
    assert status == 200 and body["items"] == [] and body["unknown_item_ids"] == ["a", "b"]


def test_concurrent_load_has_no_errors(server, als, small_data):
    users = small_data.user_map.ids[:40].tolist()
    expected = dict(zip(users, expected_top(als, small_data, users, 5), strict=True))
    port = server.conn.port

    def worker(offset):
        client, failures = Client(port), []
        for i in range(30):
            user = users[(offset + i) % len(users)]
            status, body = client.call("POST", "/recommend", {"user_id": user, "k": 5})
            if status != 200 or [x["item_id"] for x in body["items"]] != expected[user]:
                failures.append((user, status))
            if i % 10 == 0:
                status, _ = client.call("GET", f"/similar/{small_data.item_map.ids[i]}")
                failures += [("similar", status)] if status != 200 else []
        return failures

    with ThreadPoolExecutor(8) as pool:
        failures = [f for result in pool.map(worker, range(0, 80, 10)) for f in result]
    assert failures == []


def test_reload_under_load_swaps_atomically(server, model_dirs, small_data):
    users = small_data.user_map.ids[:20].tolist()
    references = {}
    for folder in model_dirs:
        engine = load_engine(Settings(model=str(folder)))
        references[engine.version] = {u: r.item_ids for u, r in zip(users, engine.recommend_many(users, 5),
                                                                      strict=True)}
    assert len(references) == 2 and list(references.values())[0] != list(references.values())[1]
    port, stop = server.conn.port, threading.Event()

    def worker(offset):
        client, failures, versions = Client(port), [], set()
        i = offset
        while not stop.is_set():
            user = users[i % len(users)]
            status, body = client.call("POST", "/recommend", {"user_id": user, "k": 5})
            i += 1
            if status != 200:
                failures.append(status)
                continue
            versions.add(body["model_version"])
            if [x["item_id"] for x in body["items"]] != references[body["model_version"]][user]:
                failures.append(("mixed", body["model_version"], user))
        return failures, versions

    admin = Client(port)
    token = {"authorization": "Bearer s3cret"}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker, offset) for offset in range(4)]
        for round_ in range(6):
            status, body = admin.call("POST", "/admin/reload", {"model": str(model_dirs[(round_ + 1) % 2])},
                                      headers=token)
            assert status == 200, body
            time.sleep(0.05)
        stop.set()
        results = [f.result() for f in futures]
    assert [f for failures, _ in results for f in failures] == []
    assert set().union(*(v for _, v in results)) == set(references)
    status, body = admin.call("GET", "/readyz")
    assert body["source"] == str(model_dirs[0])  # six reloads: the last one loaded model a


def test_reload_needs_the_token_and_keeps_serving_on_failure(server):
    status, body = server.call("POST", "/admin/reload")
    assert status == 401 and "bearer token" in body["detail"]
    status, _ = server.call("POST", "/admin/reload", headers={"authorization": "Bearer wrong"})
    assert status == 401
    status, body = server.call("POST", "/admin/reload", {"model": "/no/such/model"},
                               headers={"authorization": "Bearer s3cret"})
    assert status == 400 and "still serving the previous model" in body["detail"]
    assert server.call("GET", "/readyz")[0] == 200
    status, text = server.call("GET", "/metrics")
    assert 'recsys_model_reloads_total{outcome="failed"} 1.0' in text


def test_reload_is_disabled_without_a_token(model_dirs, free_port):
    settings = Settings(model=str(model_dirs[0]))
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        status, body = Client(port).call("POST", "/admin/reload")
    assert status == 403 and "no admin token" in body["detail"]


def test_readyz_waits_for_the_background_load(model_dirs, free_port):
    with running(create_app(Settings(model=str(model_dirs[0]))), free_port) as port:
        client, deadline = Client(port), time.time() + 30
        while (answer := client.call("GET", "/readyz"))[0] != 200:
            assert answer[1]["status"] == "loading" and time.time() < deadline
            time.sleep(0.05)
        assert client.call("POST", "/recommend", {"user_id": "x"})[0] == 200


def test_readyz_reports_a_failed_load(tmp_path, free_port):
    with running(create_app(Settings(model=str(tmp_path / "missing"))), free_port) as port:
        client = Client(port)
        deadline = time.time() + 30
        while (answer := client.call("GET", "/readyz"))[1]["status"] == "loading":
            assert time.time() < deadline
            time.sleep(0.05)
        assert answer[0] == 503 and "no such model folder" in answer[1]["error"]
        status, body = client.call("POST", "/recommend", {"user_id": "x"})
        assert status == 503 and "no such model folder" in body["detail"]


# ---- the command line -----------------------------------------------------------------------
def test_serve_the_registered_champion_in_one_command(sqlite_store, model_dirs, free_port, small_data):
    from pipelines.cli import main

    assert main(["export", "--model", str(model_dirs[0]), "--name", "shop", "--alias", "champion"]) == 0
    env = {**os.environ, "RECSYS_SERVE_ADMIN_TOKEN": "t"}
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", "models:/shop@champion",
               "--port", str(free_port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client, deadline = None, time.time() + 90
        while client is None:
            assert proc.poll() is None, proc.stderr.read()
            try:
                client = Client(free_port)
                assert client.call("GET", "/readyz")[0] == 200
            except OSError:
                client = None
                assert time.time() < deadline
                time.sleep(0.3)
        status, body = client.call("POST", "/recommend", {"user_id": small_data.user_map.ids[0], "k": 3})
        assert status == 200 and body["model_version"] == "shop/1" and len(body["items"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises the signal it handled
    assert "Application shutdown complete" in err
    assert "serving als shop/1 from models:/shop@champion" in out
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"path": "/recommend", "status": 200} in [{k: a[k] for k in ("path", "status")} for a in access]


def test_serve_fails_fast_on_a_bad_model(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_serve_refuses_files_of_other_data(model_dirs, tmp_path, capsys):
    from pipelines.cli import main

    pd.DataFrame({"user_id": ["x"], "item_id": ["y"]}).to_csv(tmp_path / "other.csv", index=False)
    pd.DataFrame({"id": ["y"], "genre": ["rock"]}).to_csv(tmp_path / "attrs.csv", index=False)
    model = str(model_dirs[0])
    assert main(["serve", "--model", model, "--train", str(tmp_path / "other.csv")]) == 2
    assert "other.csv: none of its pairs has a user and an item known" in capsys.readouterr().err
    assert main(["serve", "--model", model, "--item-attributes", str(tmp_path / "attrs.csv")]) == 2
    assert "attrs.csv: missing column(s) item_id" in capsys.readouterr().err
    items = load_model(model_dirs[0]).item_map_.ids[:2].tolist()
    for frame, message in (
            ({"item_id": ["y", "z"], "genre": ["rock", "pop"]},
             "none of its 2 item ids is an item of the model (its first: 'y')"),
            ({"item_id": [items[0], items[1], items[0]], "genre": ["rock", "pop", "jazz"]},
             f"item {items[0]!r} appears twice (rows 1 and 3); one row per item"),
            ({"item_id": items, "genre": ["rock", "pop"], "shop": ["", None]},
             "column 'shop' is empty in every row; fill it or remove it")):
        pd.DataFrame(frame).to_csv(tmp_path / "attrs.csv", index=False)
        assert main(["serve", "--model", model, "--item-attributes", str(tmp_path / "attrs.csv")]) == 2
        assert capsys.readouterr().err == f"recsys: error: {tmp_path / 'attrs.csv'}: {message}\n"
    assert main(["serve"]) == 2
    assert "serving setting model (RECSYS_SERVE_MODEL)" in capsys.readouterr().err


# ---- new users --------------------------------------------------------------------------------
def test_http_history_folds_in_unknown_users(server, als, small_data):
    history = small_data.item_map.ids[[1, 5, 9]].tolist()
    vector = als.user_vectors(history=sp.csr_matrix(
        (np.ones(3, np.float32), ([0, 0, 0], [1, 5, 9])), shape=(1, small_data.n_items))).numpy()[0]
    scores = als.item_factors().numpy() @ vector
    scores[[1, 5, 9]] = -np.inf
    expected = small_data.item_map.ids[np.lexsort((np.arange(len(scores)), -scores))[:K]].tolist()
    status, body = server.call("POST", "/recommend", {"user_id": "newcomer", "k": K,
                                                      "history": [*history, "no-such-item"]})
    assert status == 200 and body["folded_in"] and not body["fallback"]
    assert [i["item_id"] for i in body["items"]] == expected
    assert body["unknown_item_ids"] == ["no-such-item"]
    known = small_data.user_map.ids[0]
    status, body = server.call("POST", "/recommend/batch", {
        "user_ids": [known, "newcomer", "stranger"], "k": K,
        "history": {"newcomer": history, known: history}})  # a known user's history is not read
    flags = [(r["fallback"], r["folded_in"]) for r in body["results"]]
    assert status == 200 and flags == [(False, False), (False, True), (True, False)]
    assert [i["item_id"] for i in body["results"][1]["items"]] == expected
    assert [i["item_id"] for i in body["results"][0]["items"]] == expected_top(als, small_data, [known], K)[0]
    status, body = server.call("POST", "/score", {"user_id": "newcomer", "history": history,
                                                  "item_ids": expected[:2]})
    assert status == 200 and body["folded_in"] and np.allclose(
        [s["score"] for s in body["scores"]], scores[small_data.item_map.index_of(expected[:2])], atol=1e-5)
    status, text = server.call("GET", "/metrics")
    assert "recsys_fallback_users_total 1.0" in text  # only "stranger" fell back


# ---- faults -----------------------------------------------------------------------------------
def test_score_answers_every_requested_id_in_order(server, als, small_data):
    user = small_data.user_map.ids[0]
    items = small_data.item_map.ids[[3, 1, 3, 3, 0]].tolist()
    status, body = server.call("POST", "/score", {"user_id": user, "item_ids": items})
    reference = als.score(np.array([0]), np.array([3, 1, 3, 3, 0]))[0].numpy()
    assert status == 200 and [s["item_id"] for s in body["scores"]] == items
    assert np.allclose([s["score"] for s in body["scores"]], reference, atol=1e-5)


@pytest.mark.parametrize("raw", [
    b'{"user_id": NaN}', b'{"user_id": "u1", "k": Infinity}', b'{"user_id": "u1", "k": -Infinity}',
    b'{"user_id": "u1", "item_ids": [NaN]}', b'{"user_id": "u1", "filters": {"shop": [Infinity]}}',
    b'{"user_id": "u1", "k": 1e999}', b'{"user_id": "u1", "exclude_seen": NaN}',
    b'{"user_ids": ["u1"], "history": {"u1": [NaN]}}',
])
def test_json_nan_and_infinity_are_422(server, raw):
    path = "/recommend/batch" if b"user_ids" in raw else "/recommend"
    status, body = server.call("POST", path, raw=raw)
    assert status == 422 and body["detail"][0]["type"] == "json_invalid", body


def test_error_bodies_show_only_a_prefix_of_bad_values(server):
    huge = "x" * 100_000
    for path, payload in [("/recommend", {"user_id": [huge]}), ("/recommend", {"user_id": "u", "k": huge}),
                          ("/recommend", {"user_id": "u", "filters": {huge: ["a"]}}),
                          ("/score", {"user_id": "u", "item_ids": [{"a": huge}]}),
                          ("/recommend", {"user_id": "u", huge: 1})]:
        status, body = server.call("POST", path, payload)
        text = json.dumps(body)
        assert status == 422 and len(text) < 1000 and "x" * 50 not in text, (path, text[:300])
    status, body = server.call("GET", f"/similar/{'y' * 5000}")
    assert status == 404 and len(json.dumps(body)) < 300


def test_request_body_limit_is_413(model_dirs, free_port):
    settings = Settings(model=str(model_dirs[0]), max_body_bytes=2000)
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        client = Client(port)
        status, body = client.call("POST", "/score", {"user_id": "u", "item_ids": ["i"] * 1000})
        assert status == 413, body
        assert client.call("POST", "/score", {"user_id": "u", "item_ids": ["i"] * 10})[0] == 200


def broken_models(root, good):
    """Model folders that fail to load in the ways a folder breaks (each named by its fault)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folders = {}

    def copy(name):
        shutil.copytree(good, root / name)
        folders[name] = root / name
        return root / name

    state = load_file(str(good / "weights.safetensors"))
    for name, rows in (("more_item_rows", 3), ("fewer_item_rows", -3)):
        weights = dict(state)
        items = weights["item_factors"]
        weights["item_factors"] = items[:rows] if rows < 0 else torch.cat([items, items[:rows]])
        save_file(weights, str(copy(name) / "weights.safetensors"))
    data = (good / "weights.safetensors").read_bytes()
    (copy("truncated_weights") / "weights.safetensors").write_bytes(data[:len(data) // 2])
    (copy("missing_items") / "items.json").unlink()
    (copy("invalid_config") / "config.json").write_text("{not json")
    (copy("renamed_model") / "config.json").write_text(
        (good / "config.json").read_text().replace('"als"', '"no-such-model"'))
    seen = (good / "seen.npz").read_bytes()
    (copy("truncated_seen") / "seen.npz").write_bytes(seen[:len(seen) // 2])
    return folders


def test_reload_of_a_broken_model_is_400_and_keeps_serving(server, model_dirs, tmp_path, small_data):
    token = {"authorization": "Bearer s3cret"}
    user = small_data.user_map.ids[0]
    before = server.call("POST", "/recommend", {"user_id": user, "k": 5})[1]
    for fault, folder in broken_models(tmp_path, model_dirs[0]).items():
        status, body = server.call("POST", "/admin/reload", {"model": str(folder)}, headers=token)
        assert status == 400 and "still serving the previous model" in body["detail"], (fault, body)
        status, after = server.call("POST", "/recommend", {"user_id": user, "k": 5})
        assert status == 200 and after["items"] == before["items"], fault
    assert server.call("GET", "/readyz")[1]["source"] == str(model_dirs[0])


def test_reload_errors_hide_tracking_credentials(server, monkeypatch, free_port):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:pa55word@127.0.0.1:{free_port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    status, body = server.call("POST", "/admin/reload", {"model": "models:/shop@champion"},
                               headers={"authorization": "Bearer s3cret"})
    assert status == 400 and "still serving" in body["detail"]
    assert "pa55word" not in body["detail"] and "alice" not in body["detail"]
    assert "http://***@127.0.0.1" in body["detail"]


def test_an_empty_admin_token_disables_reload(model_dirs, free_port):
    settings = Settings(model=str(model_dirs[0]), admin_token="")
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        for headers in ({}, {"authorization": "Bearer "}):
            status, body = Client(port).call("POST", "/admin/reload", headers=headers)
            assert status == 403 and "reload is disabled" in body["detail"]


def test_the_access_log_writes_to_the_stdout_of_the_moment(monkeypatch):
    from serving.observe import access_log, configure_access_log

    configure_access_log(True)
    configure_access_log(True)  # configuring twice adds no second handler
    first = io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    access_log.info("one")
    first.close()  # e.g. the capture of an earlier test, or a rotated stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stdout", second)
    access_log.info("two")
    assert second.getvalue() == "two\n"
