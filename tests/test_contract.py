"""The contract every registered model and preset keeps. Parametrised over the registry:
registering a model (or a preset) adds it here. Each model trains with its `test_params`
(small, fast settings) on the structured synthetic data of conftest.py."""

import numpy as np
import pytest
import torch

from recsys import create_model, load_model, model_names
from recsys.data import random_split
from recsys.errors import RecsysError
from recsys.evaluate import evaluate
from recsys.models.base import BaseRecommender, Recommender, coerce_params, get_model_class

NAMES = model_names()


def fast_params(name: str, **extra) -> dict:
    cls = get_model_class(name)
    known = cls.param_defaults()
    quiet = {k: v for k, v in {"progress": False, "device": "cpu"}.items() if k in known}
    return {**quiet, **cls.test_params, **extra}


def as_text(value) -> str:
    """A parameter value as it would be written after --param key=."""
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


@pytest.fixture(scope="module")
def split_data(small_data):
    return random_split(small_data, test_frac=0.2, seed=0)


@pytest.fixture(scope="module")
def fitted(split_data):
    """Models fitted once per module, by name, on demand."""
    cache: dict[str, BaseRecommender] = {}

    def get(name: str) -> BaseRecommender:
        if name not in cache:
            cache[name] = create_model(name, **fast_params(name)).fit(split_data.train)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip_through_create_model_and_text(name):
    model = create_model(name, **fast_params(name))
    assert isinstance(model, BaseRecommender) and isinstance(model, Recommender)
    params = model.get_params()
    assert create_model(name, **params).get_params() == params
    cls = get_model_class(name)
    # every value survives being written as --param text and typed back
    assert coerce_params(cls, {k: as_text(v) for k, v in params.items()}) == params
    with pytest.raises(RecsysError, match=f"model '{name}' has no parameter.*no_such_param"):
        create_model(name, no_such_param=1)


@pytest.mark.parametrize("name", NAMES)
def test_clear_error_before_fit(name, tmp_path):
    model = create_model(name, **fast_params(name))
    for call in (lambda: model.score(np.array([0])), lambda: model.recommend(np.array([0]), 5),
                 lambda: model.save(tmp_path / "m")):
        with pytest.raises(RecsysError, match="not fitted: call fit"):
            call()


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_scores_and_params(name, fitted, split_data, tmp_path):
    model = fitted(name)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    users = np.arange(split_data.train.n_users)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert torch.equal(model.score(users).cpu(), loaded.score(users).cpu())
    assert loaded.user_map_ == split_data.train.user_map and loaded.item_map_ == split_data.train.item_map


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_by_seed(name, fitted, split_data):
    if not get_model_class(name).deterministic:
        pytest.skip(f"{name} trains with unordered parallel updates")
    again = create_model(name, **fast_params(name)).fit(split_data.train)
    users = np.arange(split_data.train.n_users)
    assert torch.equal(fitted(name).score(users).cpu(), again.score(users).cpu())


@pytest.mark.parametrize("name", NAMES)
def test_recommendations_exclude_seen_items(name, fitted, split_data):
    train = split_data.train
    users = np.arange(train.n_users)
    items, scores = fitted(name).recommend(users, 10, exclude=train)
    assert items.shape == (len(users), 10) and np.all(np.diff(scores, axis=1) <= 0)
    was_seen = np.asarray(train.matrix[np.repeat(users, 10), items.ravel()]).ravel() != 0
    recommended = np.isfinite(scores).ravel()  # -inf pads a row with fewer unseen items than k
    assert recommended.mean() > 0.9 and not was_seen[recommended].any()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "pop"])
def test_beats_popularity_on_structured_data(name, fitted, split_data):
    train, test = split_data
    pop = evaluate(fitted("pop"), test, train=train, k=10)["ndcg@10"]
    assert evaluate(fitted(name), test, train=train, k=10)["ndcg@10"] > pop
