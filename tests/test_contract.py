"""The contract every registered model and preset keeps. Parametrised over the registry:
registering a model (or a preset) adds it here. Each model trains with its `test_params`
(small, fast settings) on the structured synthetic data of conftest.py, or, for a model that
reads side inputs (`uses`), on simulated data carrying them (levels, item features and
titles correlated with the latent taste, a user activity segment)."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import Interactions, create_model, load_model, model_names
from recsys.data import random_split
from recsys.data.features import FeatureTable
from recsys.data.simulate import simulate
from recsys.errors import RecsysError
from recsys.evaluate import evaluate
from recsys.models import base
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


def with_side_inputs() -> Interactions:
    sim = simulate(400, 150, 8000, popularity_bias=0.5, seed=3)
    data = sim.train.with_item_features(FeatureTable.from_frame(sim.item_features, "item_id",
                                                                ids=sim.train.item_map))
    data = data.with_item_text(FeatureTable.from_frame(sim.item_text, "item_id", ids=data.item_map,
                                                       kinds={"text": "text"}))
    degree = data.user_degree
    segment = np.searchsorted(np.quantile(degree, [0.33, 0.67]), degree)
    users = pd.DataFrame({"user_id": data.user_map.ids, "segment": segment.astype(str)})
    return data.with_user_features(FeatureTable.from_frame(users, "user_id", ids=data.user_map))


@pytest.fixture(scope="module")
def datasets(small_data):
    """Train/test splits: plain interactions, and one with every side input (made on demand)."""
    cache = {"plain": random_split(small_data, test_frac=0.2, seed=0)}

    def get(name: str):
        key = "side" if get_model_class(name).uses else "plain"
        if key not in cache:
            cache[key] = random_split(with_side_inputs(), test_frac=0.2, seed=0)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def fitted(datasets):
    """Models fitted once per module, by name, on demand (pop once per data set)."""
    cache: dict[tuple, BaseRecommender] = {}

    def get(name: str, data_of: str | None = None) -> BaseRecommender:
        train = datasets(data_of or name).train
        key = (name, id(train))
        if key not in cache:
            cache[key] = create_model(name, **fast_params(name)).fit(train)
        return cache[key]

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
def test_save_load_gives_identical_scores_and_params(name, fitted, datasets, tmp_path):
    split_data = datasets(name)
    model = fitted(name)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    users = np.arange(split_data.train.n_users)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert torch.equal(model.score(users).cpu(), loaded.score(users).cpu())
    assert loaded.user_map_ == split_data.train.user_map and loaded.item_map_ == split_data.train.item_map


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_by_seed(name, fitted, datasets):
    split_data = datasets(name)
    if not get_model_class(name).deterministic:
        pytest.skip(f"{name} trains with unordered parallel updates")
    again = create_model(name, **fast_params(name)).fit(split_data.train)
    users = np.arange(split_data.train.n_users)
    assert torch.equal(fitted(name).score(users).cpu(), again.score(users).cpu())


@pytest.mark.parametrize("name", NAMES)
def test_recommendations_exclude_seen_items(name, fitted, datasets):
    train = datasets(name).train
    users = np.arange(train.n_users)
    items, scores = fitted(name).recommend(users, 10, exclude=train)
    assert items.shape == (len(users), 10) and np.all(np.diff(scores, axis=1) <= 0)
    was_seen = np.asarray(train.matrix[np.repeat(users, 10), items.ravel()]).ravel() != 0
    recommended = np.isfinite(scores).ravel()  # -inf pads a row with fewer unseen items than k
    assert recommended.mean() > 0.9 and not was_seen[recommended].any()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "pop"])
def test_beats_popularity_on_structured_data(name, fitted, datasets):
    train, test = datasets(name)
    pop = evaluate(fitted("pop", data_of=name), test, train=train, k=10)["ndcg@10"]
    assert evaluate(fitted(name), test, train=train, k=10)["ndcg@10"] > pop


class FoldedIn:
    """Scores of users encoded as if new, from their training items."""

    def __init__(self, model, history):
        self.vectors, self.items = model.user_vectors(history=history), model.item_factors()

    def score(self, users, items=None):
        return self.vectors[torch.as_tensor(users)] @ self.items.T


@pytest.mark.parametrize("name", NAMES)
def test_new_users_from_their_history_beat_popularity(name, fitted, datasets):
    encodes = getattr(base, "EncodesNewUsers", None)
    model = fitted(name)
    if encodes is None or not isinstance(model, encodes) or "history" not in getattr(
            model, "new_user_inputs", ()):
        pytest.skip(f"{name} does not encode new users from a history")
    train, test = datasets(name)
    folded = FoldedIn(model, train.matrix)
    assert folded.vectors.shape[0] == train.n_users and torch.isfinite(folded.vectors).all()
    pop = evaluate(fitted("pop", data_of=name), test, train=train, k=10)["ndcg@10"]
    assert evaluate(folded, test, train=train, k=10)["ndcg@10"] > pop
