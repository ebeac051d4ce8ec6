"""Column types shared by every domain's tables (portable across SQLite and PostgreSQL)."""

from __future__ import annotations

import enum

from sqlalchemy import JSON, BigInteger, Enum, Integer
from sqlalchemy.dialects.postgresql import JSONB

from provisioning.database import UTCDateTime

__all__ = ["JSONDocument", "SerialId", "UTCDateTime", "enum_type"]

# Integer primary keys that grow past 2**31 on PostgreSQL; SQLite's rowid is already 64-bit.
SerialId = BigInteger().with_variant(Integer(), "sqlite")

# JSON documents: jsonb on PostgreSQL (indexable), JSON text on SQLite.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def enum_type(cls: type[enum.StrEnum]) -> Enum:
    """A string column holding one of ``cls``'s values, checked by the database."""
    return Enum(
        cls,
        name=cls.__name__.lower(),
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        length=max(len(m.value) for m in cls),
        values_callable=lambda members: [m.value for m in members],
    )
