"""Service configuration, read from the environment with pydantic-settings.

``DATABASE_URL`` is read as is; every other setting is prefixed ``PROVISIONING_``.
A bad value fails at start with one line naming the setting (:func:`load`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./provisioning.db"


class SettingsError(Exception):
    """A setting has a value the service cannot start with."""


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="PROVISIONING_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL; sqlite:///path or postgresql://user@host/db",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    # Seals SCIM paging cursors (RFC 9865); every replica must share it. Derived from the
    # database URL when unset, which every replica shares too.
    scim_cursor_secret: str | None = Field(default=None, min_length=16)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if value.startswith(("sqlite:", "postgresql+psycopg:")):
            return value
        raise ValueError("must be a sqlite:/// or postgresql:// URL")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    info = Settings.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return f"PROVISIONING_{field.upper()}"


def load(**overrides: object) -> Settings:
    """Read the settings, or raise :class:`SettingsError` naming the first bad one."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = env_name(field) if field in Settings.model_fields else field
        raise SettingsError(f"invalid setting {name}: {error['msg']}") from None
