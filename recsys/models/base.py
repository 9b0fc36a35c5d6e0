"""The Recommender protocol, a base class with the shared plumbing, and the model registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureTable
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.params import coerce_params, param_defaults
from recsys.models.persist import (  # noqa: F401 (the model-folder API, re-exported here)
    FORMAT_VERSION,
    SEEN,
    load_model,
    load_seen,
    save_model,
    save_seen,
)

SEEN_FILE = SEEN
# side inputs a model can declare in `uses`; the CLI and configs wire files to them
SIDE_INPUTS = frozenset({"levels", "item_features", "user_features", "item_text"})


@runtime_checkable
class Recommender(Protocol):
    """What every model offers; evaluation, batch jobs and serving rely on nothing else."""

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> Recommender: ...

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor: ...

    def recommend(self, users: np.ndarray, k: int, *, exclude: Interactions | None = None,
                  items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: str | Path) -> None: ...


@runtime_checkable
class HasFactors(Protocol):
    """A model whose score is the dot product of a user and an item factor vector, so that
    evaluation, batch jobs and serving rank with one matrix product and a top-k. A model that
    also has `factor_tables()` (FactorModel) is ranked from those tables as it holds them,
    dense or CSR (recsys.factor_table), never from densified copies."""

    def user_factors(self) -> torch.Tensor: ...

    def item_factors(self) -> torch.Tensor: ...


@runtime_checkable
class EncodesNewUsers(Protocol):
    """A model that can score users it never saw in training.

    `user_vectors(features=None, history=None) -> Tensor [n, d]`, one row per new user, in the
    space of `item_factors()`: `history` is a CSR matrix [n, n_items] of the items each new user
    interacted with (weights as in training: counts, or 1), `features` a FeatureTable with one
    row per user, encoded with the model's vocabularies (`features_["user_features"].encode`;
    the Ranker does it from raw columns). `new_user_inputs` names the ones the model reads
    ("history", "features"); it raises RecsysError for an input it cannot use.
    """

    new_user_inputs: tuple[str, ...]

    def user_vectors(self, features: FeatureTable | None = None,
                     history: sp.csr_matrix | None = None) -> torch.Tensor: ...


_REGISTRY: dict[str, type[BaseRecommender]] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def register_preset(name: str, model: str, **params: Any) -> None:
    """A registry name for a model with some parameters preset (e.g. relmf = mf, loss=relmf)."""
    _PRESETS[name] = (model, params)


def model_names() -> list[str]:
    return sorted({*_REGISTRY, *_PRESETS})


def preset_params(name: str) -> dict[str, Any]:
    """Parameters a registry name presets ({} for a plain model name)."""
    return dict(_PRESETS[name][1]) if name in _PRESETS else {}


def get_model_class(name: str) -> type[BaseRecommender]:
    name = _PRESETS[name][0] if name in _PRESETS else name
    if name not in _REGISTRY:
        raise RecsysError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _REGISTRY[name]


def check_side_inputs(name: str, given: Iterable[str]) -> None:
    """Refuse side inputs (`item_features`, ...) that model `name` does not read, saying why."""
    cls = get_model_class(name)
    for side in given:
        if side not in cls.uses:
            readers = [n for n in model_names() if side in get_model_class(n).uses]
            reads = ", ".join(sorted(cls.uses)) or "nothing but the interactions"
            raise RecsysError(f"model {name!r} does not use {side.replace('_', ' ')} (it reads "
                              f"{reads}); models that do: {', '.join(readers) or 'none yet'}")


def create_model(name: str, **params: Any) -> BaseRecommender:
    """Instantiate a registered model or preset with typed, range-checked parameters (strings
    such as "64" or "128,64" are typed from the annotations); an unknown parameter, a wrong
    type or a value out of range is an error naming it."""
    cls = get_model_class(name)
    model = cls(**coerce_params(cls, {**preset_params(name), **params}, model=name))
    if name in _PRESETS:
        model.preset = name
    return model


class BaseRecommender:
    """Shared plumbing: params (scikit-learn style), top-K recommendation, save/load.

    Subclasses implement `fit`, `score`, and `_state()` / `_load_state()` for their tensors
    (plus `_extras()` / `_load_extras()` for JSON state). Fitted attributes end with an
    underscore; `user_map_`/`item_map_` come from `fit`.

    `uses` declares the side inputs the model reads (a subset of SIDE_INPUTS); the CLI refuses
    a feature file for a model that does not use it. The feature tables of the inputs it uses
    are kept in `features_` and saved with the model. `state_rows` names the tensors of
    `_state()` with a row per user or item, checked against the id maps at load.
    """

    name: ClassVar[str] = "base"
    preset = None  # str: the preset it was created as (e.g. sgl for lightgcn), if any
    # side inputs the model reads: 'levels', 'item_features', 'user_features', 'item_text'
    uses: ClassVar[frozenset[str]] = frozenset()
    state_rows: ClassVar[dict[str, str]] = {}
    # small, fast settings for the contract tests (tests/test_contract.py)
    test_params: ClassVar[dict[str, Any]] = {}
    # the same data, parameters and seed give the same scores
    deterministic: ClassVar[bool] = True
    # what `recsys tune` searches by default: parameter name -> recsys.models.space dimension
    search_space: ClassVar[dict[str, Any]] = {}
    user_map_: IdMap
    item_map_: IdMap
    features_: dict[str, FeatureTable]

    # ---- parameters -----------------------------------------------------------------
    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        return param_defaults(cls)

    @property
    def label(self) -> str:
        """The name a user chose it by: the preset (sgl, relmf) or the model's own name."""
        return self.preset or self.name

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitting and scoring ----------------------------------------------------------
    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> BaseRecommender:
        raise NotImplementedError

    def _start_fit(self, train: Interactions) -> None:
        """Record what every fitted model keeps: the id maps and a summary of the fit."""
        # typed and range-checked here too, for models built directly in Python
        for key, value in coerce_params(type(self), self.get_params()).items():
            setattr(self, key, value)
        if train.nnz == 0:
            raise RecsysError("training data has no interactions")
        self.user_map_, self.item_map_ = train.user_map, train.item_map
        self.features_ = {name: getattr(train, name) for name in sorted(self.uses)
                          if name != "levels" and getattr(train, name) is not None}
        self.fit_info_: dict[str, Any] = {"n_users": train.n_users, "n_items": train.n_items,
                                          "n_pairs": train.nnz}

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "item_map_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RecsysError(f"{self.name} model is not fitted: call fit() first")

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        raise NotImplementedError

    def recommend(self, users: np.ndarray, k: int, *, exclude: Interactions | None = None,
                  items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user, best first.

        `exclude` masks each user's stored items (usually the training data); `items`
        restricts the candidates. Rows with fewer than k candidates end in -inf scores.
        """
        from recsys.inference import Ranker

        self._check_fitted()
        return Ranker(self, exclude).top_items(np.asarray(users, dtype=np.int64), k, items=items)

    # ---- persistence (recsys/models/persist.py writes and verifies the folder) -----------
    def _state(self) -> dict[str, torch.Tensor]:
        """The learned tensors, saved to weights.safetensors."""
        raise NotImplementedError

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _extras(self) -> dict[str, Any]:
        """Learned state that is not a tensor (vocabularies, level names, encoder identity,
        offsets), saved as JSON to extras.json; override with `_load_extras`."""
        return {}

    def _load_extras(self, extras: dict[str, Any]) -> None:
        """Restore what `_extras` returned (called after `_load_state`)."""

    def save(self, path: str | Path, *, seen: Interactions | None = None) -> None:
        """Write the model (and the `seen` items, usually the training data, for seen-item
        exclusion) as a model folder, atomically: see `recsys.models.persist`."""
        save_model(self, path, seen)
