"""Request-time user features: the checks of one user's values and of a table of users, and
`recsys recommend --user-features`, the exported pyfunc model and `POST /recommend` giving the
same lists for new users, equal to ranking by the query tower's vector directly."""

import numpy as np
import pandas as pd
import pytest
from http_client import Client, running

from pipelines.cli import main
from recsys.data.features import FeatureTable
from recsys.data.request_features import check_frame, feature_row, unknown_values
from recsys.data.synthetic import synthetic_log
from recsys.errors import DataError, RecsysError
from recsys.models.base import load_model
from serving import Settings, create_app
from serving.loader import load_engine

K = 8
PARAMS = {"dim": 8, "hidden": "16,8", "epochs": 3, "lr": 0.01, "valid_frac": 0.0, "history": 5,
          "progress": False}


@pytest.fixture(scope="module")
def table():
    frame = pd.DataFrame({"user_id": ["a", "b", "c"], "gender": ["f", "m", "f"],
                          "age": [20.0, 30.0, 40.0], "tags": ["x|y", "y", "z"],
                          "vec": ["1 2", "3 4", "5 6"]})
    return FeatureTable.from_frame(frame, "user_id")


def test_feature_row_checks_names_and_kinds(table):
    row = feature_row(table, {"gender": "f", "age": 25, "tags": ["x", "w"], "vec": [1, 2.5]})
    assert row == {"gender": "f", "age": 25, "tags": "x|w", "vec": [1, 2.5]}
    assert feature_row(table, {"gender": None}) == {"gender": None}
    assert unknown_values(table, {**row, "gender": "n"}) == {"gender": ["n"], "tags": ["w"]}
    for values, message in [({"gendre": "f"}, "features: unknown user feature 'gendre'; the model's "
                             "user features are: gender, age, tags, vec"),
                            ({"age": "old"}, "features.age: expected a number (a numeric feature), "
                             "got 'old'"),
                            ({"gender": 1.5}, "features.gender: expected a text or integer value"),
                            ({"gender": ["f"]}, "features.gender: expected a text or integer value"),
                            ({"tags": [["x"]]}, "features.tags: expected a text of values"),
                            ({"vec": [1, 2, 3]}, "features.vec: 3 numbers, expected 2"),
                            ({"age": True}, "features.age: expected a number")]:
        with pytest.raises(DataError) as err:
            feature_row(table, values)
        assert str(err.value).startswith(message), values


def test_check_frame_names_file_column_and_row(table):
    good = pd.DataFrame({"user_id": ["n1", "n2"], "gender": ["f", None], "age": [1.0, np.nan]})
    check_frame(table, good, "new.csv", id_col="user_id")
    with pytest.raises(DataError, match="new.csv: column 'age' row 2: 'x' is not a finite number"):
        check_frame(table, good.assign(age=["1", "x"]), "new.csv", id_col="user_id")
    with pytest.raises(DataError, match="new.csv: unknown user feature 'height'"):
        check_frame(table, good.assign(height=1.0), "new.csv", id_col="user_id")
    with pytest.raises(DataError, match="id 'n1' appears twice"):
        check_frame(table, good.assign(user_id=["n1", "n1"]), "new.csv", id_col="user_id")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-tower model trained from the CLI with item and user feature files."""
    root = tmp_path_factory.mktemp("two_tower")
    log = synthetic_log(80, 60, 900, string_ids=True, seed=5)
    rng = np.random.default_rng(0)
    users = pd.DataFrame({"user_id": sorted(log.user_id.unique())})
    users["gender"] = rng.choice(["f", "m"], len(users))
    users["age"] = rng.integers(18, 70, len(users)).astype(float)
    users["tags"] = ["|".join(rng.choice(list("abcd"), 2, replace=False)) for _ in range(len(users))]
    items = pd.DataFrame({"item_id": sorted(log.item_id.unique())})
    items["genre"] = rng.choice(["rock", "jazz", "pop"], len(items))
    log.to_csv(root / "train.csv", index=False)
    users.to_csv(root / "users.csv", index=False)
    items.to_csv(root / "items.csv", index=False)
    params = [p for k, v in PARAMS.items() for p in ("--param", f"{k}={v}")]
    assert main(["train", "--model", "two_tower", "--train", str(root / "train.csv"),
                 "--item-features", str(root / "items.csv"), "--user-features",
                 str(root / "users.csv"), *params, "--out", str(root / "m")]) == 0
    return root, log


NEW = {  # new users and their request-time features (one with an unknown gender value)
    "newbie": {"gender": "f", "age": 31.0, "tags": "a|b"},
    "elder": {"gender": "m", "age": 68.0, "tags": "c"},
    "alien": {"gender": "x", "age": None, "tags": "d"},
}


def expected(model, features: dict, k: int) -> list:
    """Reference: the query tower's vector of the encoded features, ranked against every item
    factor (ties to the lower index; a new user has no seen items)."""
    frame = pd.DataFrame([{"user_id": "u", **features}])
    encoded = model.features_["user_features"].encode(frame, "user_id")
    scores = (model.item_factors() @ model.user_vectors(features=encoded)[0]).numpy()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return model.item_map_.ids[order].tolist()


def test_cli_pyfunc_and_http_answer_new_users_from_features(trained, sqlite_store, free_port, capsys):
    import mlflow

    root, log = trained
    model = load_model(root / "m")
    known = sorted(log.user_id.unique())[:3]
    users = [*known, *NEW, "stranger"]
    pd.DataFrame([{"user_id": u, **f} for u, f in NEW.items()]).to_csv(root / "new.csv", index=False)
    pd.DataFrame({"user_id": users}).to_csv(root / "who.csv", index=False)
    assert main(["recommend", "--model", str(root / "m"), "--users", str(root / "who.csv"),
                 "--user-features", str(root / "new.csv"), "--k", str(K),
                 "--out", str(root / "r.parquet")]) == 0
    assert "3 users unknown to the model were answered from their history or features" in \
        capsys.readouterr().out
    assert main(["export", "--model", str(root / "m"), "--name", "tt", "--alias", "champion"]) == 0
    uri = "models:/tt@champion"

    def lists(frame: pd.DataFrame) -> dict:
        frame = frame.sort_values(["user_id", "rank"])
        return {u: (g.item_id.tolist(), bool(g.fallback.iloc[0]), bool(g.folded_in.iloc[0]),
                    g.score.to_numpy(np.float64)) for u, g in frame.groupby("user_id")}

    batch = lists(pd.read_parquet(root / "r.parquet"))
    rows = [{"user_id": u, **NEW.get(u, {})} for u in users]
    pyfunc = lists(mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(rows), params={"k": K}))
    settings = Settings(model=uri)
    with running(create_app(settings, load_engine(settings)), free_port) as port:
        client, http = Client(port), {}
        for user in users:
            features = {**NEW.get(user, {})}
            if user == "newbie":
                features["tags"] = ["a", "b"]  # a list reads as the file's "a|b"
            status, body = client.call("POST", "/recommend", {
                "user_id": user, "k": K, **({"features": features} if features else {})})
            assert status == 200, body
            http[user] = ([i["item_id"] for i in body["items"]], body["fallback"], body["folded_in"],
                          np.array([i["score"] for i in body["items"]]))
            assert body["unknown_feature_values"] == ({"gender": ["x"]} if user == "alien" else {})
        status, scored = client.call("POST", "/score", {
            "user_id": "newbie", "item_ids": http["newbie"][0][:3], "features": NEW["newbie"]})
        assert status == 200 and scored["folded_in"]
        assert np.allclose([s["score"] for s in scored["scores"]], http["newbie"][3][:3], rtol=1e-5)
        errors = [client.call("POST", "/recommend", {"user_id": "n", "features": bad})
                  for bad in ({"gendre": "f"}, {"age": "old"}, {"tags": [1.5]}, {"age": True})]
        batch_error = client.call("POST", "/recommend/batch", {
            "user_ids": ["n"], "features": {"n": {"age": [1]}}})
    assert set(batch) == set(pyfunc) == set(http) == set(users)
    for user in users:
        for other in (pyfunc[user], http[user]):
            assert other[:3] == batch[user][:3], user
            assert np.allclose(other[3], batch[user][3], rtol=1e-5)
    for user, features in NEW.items():
        assert batch[user][1:3] == (False, True)
        assert batch[user][0] == expected(model, features, K), user
    assert batch["stranger"][1:3] == (True, False)
    assert batch["newbie"][0] != batch["elder"][0]  # the features count
    assert [status for status, _ in errors] == [422] * 4
    assert errors[0][1]["detail"].startswith("features: unknown user feature 'gendre'")
    assert errors[1][1]["detail"] == "features.age: expected a number (a numeric feature), got 'old'"
    assert errors[2][1]["detail"].startswith("features.tags: expected a text of values")
    assert errors[3][1]["detail"][0]["loc"][:3] == ["body", "features", "age"]  # a JSON bool
    assert batch_error[0] == 422 and batch_error[1]["detail"].startswith("features.n.age:")


def test_bad_feature_files_and_models_without_features(trained, tmp_path, capsys):
    root, _ = trained
    pd.DataFrame({"user_id": ["n1", "n2"], "age": [3.0, "old"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["recommend", "--model", str(root / "m"), "--user-features", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "r.parquet")]) == 2
    assert f"recsys: error: {tmp_path / 'bad.csv'}: column 'age' row 2: 'old' is not a finite" \
        in capsys.readouterr().err
    assert main(["train", "--model", "als", "--train", str(root / "train.csv"), "--param", "factors=4",
                 "--param", "iterations=2", "--out", str(tmp_path / "als")]) == 0
    pd.DataFrame({"user_id": ["n1"], "age": [3.0]}).to_csv(tmp_path / "f.csv", index=False)
    assert main(["recommend", "--model", str(tmp_path / "als"), "--user-features",
                 str(tmp_path / "f.csv"), "--out", str(tmp_path / "r.parquet")]) == 2
    assert "als model does not answer new users from features (it reads history for them)" \
        in capsys.readouterr().err
    with pytest.raises(RecsysError, match="does not answer new users from features"):
        from serving.engine import Engine

        Engine(load_model(tmp_path / "als"), None).features({"age": 3})
