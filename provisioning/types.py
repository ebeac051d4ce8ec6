"""Column types shared by every domain's tables, and the JSON the database builds and
returns, portable across SQLite and PostgreSQL."""

from __future__ import annotations

import enum
import json
from typing import Any

from sqlalchemy import JSON, BigInteger, ColumnElement, Enum, Integer, func, literal
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by

from provisioning.database import UTCDateTime

__all__ = [
    "JSONDocument",
    "SerialId",
    "UTCDateTime",
    "enum_type",
    "json_aggregate",
    "json_array",
    "json_object",
    "json_rows",
]

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


# -- JSON the database builds: the same document from each dialect's functions -------


def json_object(dialect: str, **pairs: Any) -> ColumnElement[Any]:
    """A JSON object built by the database (json_build_object / json_object)."""
    arguments = [part for key, value in pairs.items() for part in (literal(key), value)]
    return (func.json_build_object if dialect == "postgresql" else func.json_object)(*arguments)


def json_array(dialect: str, *values: Any) -> ColumnElement[Any]:
    """A JSON array built by the database (json_build_array / json_array)."""
    return (func.json_build_array if dialect == "postgresql" else func.json_array)(*values)


def json_aggregate(dialect: str, value: Any, *order_by: Any) -> ColumnElement[Any]:
    """The JSON array of a group's ``value``s: in ``order_by`` order on PostgreSQL;
    SQLite's aggregates keep no order, so its readers sort."""
    if dialect == "postgresql":
        return func.json_agg(aggregate_order_by(value, *order_by) if order_by else value)
    return func.json_group_array(value)


def json_rows(value: Any) -> list[Any]:
    """An aggregated JSON array as read back: text on SQLite, decoded (or NULL, for no
    rows) on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value or []
