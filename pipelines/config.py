"""Validated YAML configs for comparison pipelines: a typo is an error naming the key, before any work."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys.errors import RecsysError
from recsys.evaluate.metrics import RANKING_METRICS
from recsys.models.base import coerce_params, get_model_class, model_names, preset_params
from recsys.models.space import search_space
from recsys.ranking import MAX_K


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulateData(Strict):
    kind: Literal["simulate"] = "simulate"
    n_users: int = Field(3000, gt=1)
    n_items: int = Field(1500, gt=1)
    n_interactions: int = Field(40000, gt=0)
    popularity_bias: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)


class FileData(Strict):
    kind: Literal["file"]
    path: str
    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str | None = None
    min_rating: float | None = Field(None, allow_inf_nan=False)
    time_col: str | None = None
    level_col: str | None = None
    levels: str | None = None
    levels_from_rating: str | None = None
    # side-feature files (as `recsys train --item-features` etc.); models that do not use
    # them (see `uses`) ignore them
    item_features: str | None = None
    user_features: str | None = None
    item_text: str | None = None


class SplitConfig(Strict):
    how: Literal["random", "temporal", "leave-last"] = "random"
    test_frac: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0)


class TuneConfig(Strict):
    """A search per model variant before it is evaluated (`recsys tune`'s options); `space`
    adds to or overrides the model's own search space, in the --space file's format."""

    trials: int | None = Field(20, gt=0)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    metric: str | None = None
    space: dict[str, Any] = {}
    valid_frac: float = Field(0.1, gt=0, lt=1)
    folds: int = 1
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def budget_and_metric(self) -> TuneConfig:
        """A search needs a budget, and its metric and folds are checked before any work."""
        from pipelines.tune import check_folds, check_metric

        if self.trials is None and self.timeout is None:
            raise ValueError("give trials, timeout or both: a search needs a budget")
        try:
            check_folds(self.folds)
            if self.metric is not None:
                check_metric(self.metric)
        except RecsysError as exc:
            raise ValueError(str(exc)) from None
        return self


class ModelConfig(Strict):
    name: str
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def known_model_and_params(self) -> ModelConfig:
        """Parameters typed and range-checked like `--param` values, before any work."""
        if self.name not in model_names():
            raise ValueError(f"unknown model {self.name!r}; known models: {', '.join(model_names())}")
        cls = get_model_class(self.name)
        if empty := [key for key, values in self.grid.items() if not values]:
            raise ValueError(f"grid.{empty[0]}: give at least one value")
        try:
            self.params = coerce_params(cls, self.params, model=self.name)
            self.grid = {key: [coerce_params(cls, {key: v}, model=self.name)[key] for v in values]
                         for key, values in self.grid.items()}
        except RecsysError as exc:
            raise ValueError(str(exc)) from None
        if self.tune is not None:
            try:
                space, _ = search_space(self.name, self.tune.space, source="tune.space",
                                        fixed=self.params, varied=self.grid,
                                        fixed_by="params or grid")
            except RecsysError as exc:
                raise ValueError(str(exc)) from None
            if not space:
                raise ValueError(f"tune: model {self.name!r} has nothing to search (no search "
                                 "space of its own; give one in tune.space)")
        return self

    def fixed(self, variant: dict[str, Any]) -> dict[str, Any]:
        """The parameters of `variant` a search leaves alone: the config's own, not the
        preset's (a preset's values are where the search starts, not limits on it)."""
        return {k: v for k, v in variant.items() if k in self.params or k in self.grid}

    def variants(self) -> list[dict[str, Any]]:
        """Every parameter set of the grid (one when there is no grid), preset values first."""
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [{**preset_params(self.name), **self.params, **dict(zip(keys, c, strict=True))}
                for c in combos]


class CompareConfig(Strict):
    experiment: str = "recsys"
    data: SimulateData | FileData = Field(default_factory=SimulateData, discriminator="kind")
    split: SplitConfig = SplitConfig()
    models: list[ModelConfig] = Field(min_length=1)
    k: list[int] = [10, 20]
    select: str = "ndcg@20"
    register_as: str | None = None
    alias: str = "champion"

    @field_validator("k")
    @classmethod
    def positive_k(cls, ks: list[int]) -> list[int]:
        if not ks or any(not 0 < k <= MAX_K for k in ks):
            raise ValueError(f"k must be positive integers, at most {MAX_K}")
        return sorted(set(ks))

    @model_validator(mode="after")
    def selectable_metric(self) -> CompareConfig:
        name, _, k = self.select.partition("@")
        if name not in RANKING_METRICS or not k.isdigit() or int(k) not in self.k:
            raise ValueError(f"select {self.select!r} must be METRIC@K with METRIC in "
                             f"{', '.join(RANKING_METRICS)} and K in k={self.k}")
        return self


def load_config(path: str | Path) -> CompareConfig:
    """Parse and validate a YAML config; errors name the file and the offending key."""
    path = Path(path)
    if not path.exists():
        raise RecsysError(f"{path}: no such config file")
    if path.is_dir():
        raise RecsysError(f"{path}: is a folder, not a config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return CompareConfig.model_validate(raw)
    except UnicodeDecodeError:
        raise RecsysError(f"{path}: not a text file (a config is YAML)") from None
    except yaml.YAMLError as exc:
        raise RecsysError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also shows up as a missing one: name the typo first
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        raise RecsysError(f"{path}: {where}: {message}") from exc
