"""The Recommender protocol, a base class with the shared plumbing, and the model registry."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError

FORMAT_VERSION = 1
SEEN_FILE = "seen.npz"  # the training matrix beside a model, for seen-item exclusion


@runtime_checkable
class Recommender(Protocol):
    """What every model offers; evaluation, batch jobs and serving rely on nothing else."""

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> Recommender: ...

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor: ...

    def recommend(self, users: np.ndarray, k: int, *, exclude: Interactions | None = None,
                  items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: str | Path) -> None: ...


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


def create_model(name: str, **params: Any) -> BaseRecommender:
    """Instantiate a registered model or preset; unknown parameters are an error naming them."""
    cls = get_model_class(name)
    params = {**preset_params(name), **params}
    known = cls.param_defaults()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RecsysError(f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"parameters: {', '.join(sorted(known))}")
    return cls(**params)


class BaseRecommender:
    """Shared plumbing: params (scikit-learn style), top-K recommendation, save/load.

    Subclasses implement `fit`, `score`, and `_state()` / `_load_state()` for their tensors.
    Fitted attributes end with an underscore; `user_map_`/`item_map_` come from `fit`.
    """

    name: ClassVar[str] = "base"
    user_map_: IdMap
    item_map_: IdMap

    # ---- parameters -----------------------------------------------------------------
    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {n: p.default for n, p in sig.parameters.items() if n != "self"}

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
        if train.nnz == 0:
            raise RecsysError("training data has no interactions")
        self.user_map_, self.item_map_ = train.user_map, train.item_map
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
        from recsys.evaluate.evaluator import mask_rows, top_k

        self._check_fitted()
        if k <= 0:
            raise RecsysError(f"k must be positive, got {k}")
        users = np.asarray(users, dtype=np.int64)
        scores = self.score(users, items).float()
        if exclude is not None:
            rows = exclude.matrix[users]
            if items is not None:
                rows = rows[:, np.asarray(items)]
            mask_rows(scores, rows)
        top, values = top_k(scores, k)
        top = top.cpu().numpy()
        if items is not None:
            top = np.asarray(items)[top]
        return top, values.cpu().numpy()

    # ---- persistence --------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write config.json, the id maps (JSON) and weights.safetensors into folder `path`."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"model": self.name, "format": FORMAT_VERSION, "params": self.get_params(),
                  "fit_info": self.fit_info_}
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str))
        self.user_map_.save(path / "users.json")
        self.item_map_.save(path / "items.json")
        state = {k: v.detach().cpu().contiguous() for k, v in self._state().items()}
        save_file(state, str(path / "weights.safetensors"))


def load_model(path: str | Path) -> BaseRecommender:
    """Load a model saved with `save`; no pickle, so loading never runs code from the file."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise RecsysError(f"{path}: not a model directory (no config.json)")
    config = json.loads(config_file.read_text())
    model = get_model_class(config["model"])(**config["params"])
    model.user_map_ = IdMap.load(path / "users.json")
    model.item_map_ = IdMap.load(path / "items.json")
    model._load_state(load_file(str(path / "weights.safetensors")))
    model.fit_info_ = config.get("fit_info", {})
    return model


def save_seen(path: str | Path, seen: Interactions) -> None:
    """Store the users' seen items (usually the training data) in model folder `path`, so the
    folder alone can serve recommendations that leave out what users already have."""
    sp.save_npz(Path(path) / SEEN_FILE, seen.matrix.tocsr())


def load_seen(path: str | Path, model: BaseRecommender) -> Interactions | None:
    """The seen items stored beside `model` in folder `path`, or None if there are none."""
    file = Path(path) / SEEN_FILE
    if not file.exists():
        return None
    matrix = sp.load_npz(file).tocsr()
    expected = (len(model.user_map_), len(model.item_map_))
    if matrix.shape != expected:
        raise RecsysError(f"{file}: seen-item matrix has shape {matrix.shape}, "
                          f"the model has {expected[0]} users x {expected[1]} items")
    return Interactions(matrix, model.user_map_, model.item_map_)
