"""Table of static API tokens; only a hash of each secret is stored."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.database import Base, utcnow
from provisioning.types import UTCDateTime


class ApiToken(Base):
    """A named bearer token with scopes; ``secret_hash`` is SHA-256 of the secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # The person it speaks for when it asks or decides (access requests, reviews), if any.
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When it last authenticated a call, to the minute (provisioning.tokens.credentials).
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ServiceSecret(Base):
    """A secret the service generated for itself (:mod:`provisioning.tokens.secrets`),
    stored so that every replica on the database uses the same one."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
