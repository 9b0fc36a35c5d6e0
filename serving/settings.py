"""Server settings: constructor arguments, or RECSYS_SERVE_* environment variables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from recsys.env_settings import settings_from_env

ENV_PREFIX = "RECSYS_SERVE_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="model folder, models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    train: str | None = Field(None, description="training file whose items are excluded "
                              "(default: the seen items stored with the model)")
    item_attributes: str | None = Field(None, description="item_id + categorical columns for filters")
    max_k: int = Field(1000, ge=1, description="largest k a request may ask for")
    max_batch_users: int = Field(1000, ge=1, description="most users in one /recommend/batch request")
    max_item_ids: int = Field(100_000, ge=1, description="most item ids in one request list")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, description="largest request body in bytes "
                                "(larger: 413)")
    access_log: bool = Field(True, description="print one JSON line per request to stdout")
    admin_token: SecretStr | None = Field(None, description="bearer token for /admin/reload "
                                          "(unset or empty: reload is disabled)")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from RECSYS_SERVE_<FIELD> variables, overridden by non-None `overrides`."""
        return settings_from_env(cls, ENV_PREFIX, "serving setting", overrides)
