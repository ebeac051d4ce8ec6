"""Dry runs: make a change in a transaction, keep what the engine did, roll everything back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from provisioning.database import Database

T = TypeVar("T")


class _RollBack(Exception):
    pass


def preview(database: Database, change: Callable[[Session], T]) -> T:
    """Run ``change`` exactly as a commit would, return its result, and write nothing.

    The change runs through the same domain function (and so the same engine
    run) that a real request uses; the transaction is then rolled back. What
    ``change`` returns must be plain values, since the rows it touched vanish.
    """
    result: list[T] = []
    try:
        with database.transaction() as session:
            result.append(change(session))
            raise _RollBack
    except _RollBack:
        pass
    return result[0]
