"""Text rules for every edge and both databases: the characters text may hold, and the
folded key by which text compares without regard to case.

**Characters.** Text from outside may not hold control characters (Unicode category Cc:
U+0000-U+001F and U+007F-U+009F) other than TAB, LF and CR, nor a lone surrogate (which
is no character and cannot be stored as UTF-8). The three kept may appear in any field:
a multi-line reason or description needs them, and a name holding one is merely odd.
NUL in particular is refused everywhere: PostgreSQL's text columns cannot hold it and
SQLite's ``LIKE`` stops at it, so the two databases could never agree on it.

**Folding.** :func:`fold` is the key of a case-insensitive comparison: the text in
Unicode normalisation form NFKC, case-folded (``str.casefold``), and normalised again
(NFKC_Casefold without the removal of default ignorables). Compatibility forms
(fullwidth letters, ligatures) and case variants (``ß``/``ss``, final sigma, dotted
``İ``) all meet. It is computed once, in Python, stored in indexed key columns and
compared there, so SQLite and PostgreSQL answer alike. A key may be longer than its
text (``İ`` folds to two characters): :func:`key` checks the limit after folding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from unicodedata import normalize

from sqlalchemy import ColumnElement, Text, func, literal_column

KEY_LENGTH = 255
"""The longest folded key a key column holds (``users.user_name_key`` and the others)."""

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class TextError(ValueError):
    """Text the rules refuse; the message says which rule, never echoing the character."""


def problem(value: str) -> str | None:
    """Why ``value`` breaks the character rule, or None when it does not."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        what = "NUL"
    elif "\ud800" <= char <= "\udfff":
        what = "a lone surrogate"
    else:
        what = "a control character"
    return f"holds {what} (U+{ord(char):04X} at position {found.start()})"


def check(value: str, name: str = "text") -> str:
    """``value`` when it keeps the character rule; else :class:`TextError`."""
    why = problem(value)
    if why is not None:
        raise TextError(f"{name} {why}")
    return value


def strings(document: Any) -> Iterator[tuple[str, str]]:
    """Every string of a JSON document, keys included, with where it is (a dotted path)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path or "value", value
        elif isinstance(value, dict):
            for k, v in value.items():
                where = f"{path}.{k}" if path else str(k)
                if isinstance(k, str):
                    yield where, k
                stack.append((where, v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))


def check_document(document: Any) -> None:
    """Every string of a JSON document keeps the character rule; else :class:`TextError`
    naming the first that does not."""
    for where, value in strings(document):
        if _FORBIDDEN.search(value) is not None:
            check(value, where)


def fold(value: str) -> str:
    """The case-insensitive comparison key of ``value`` (NFKC, case-folded, NFKC again).

    Idempotent: ``fold(fold(s)) == fold(s)``, so a stored key may be folded again.
    """
    if value.isascii():
        return value.lower()
    return normalize("NFKC", normalize("NFKC", value).casefold())


def fold_sql(expr: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A value no key column holds, folded in SQL: by :func:`provisioning.text.fold` itself
    on SQLite (a function of each connection); on PostgreSQL by ``lower(normalize(...,
    NFKC))``, which differs from it only for the few characters whose case folding is not
    their lower case (``ß``, final sigma, ...)."""
    if dialect == "postgresql":
        return func.lower(func.normalize(expr, literal_column("NFKC")))
    return func.fold(expr, type_=Text)


def key(value: str, name: str = "text", limit: int = KEY_LENGTH) -> str:
    """``value`` folded, checked to fit a key column of ``limit`` characters (after folding:
    a key can be longer than its text); else :class:`TextError`."""
    folded = fold(check(value, name))
    if len(folded) > limit:
        raise TextError(
            f"{name} is too long: {len(folded)} characters once case-folded, at most {limit}"
        )
    return folded


def optional_key(value: str | None, name: str = "text", limit: int = KEY_LENGTH) -> str | None:
    """:func:`key` of a value that may be missing."""
    return None if value is None else key(value, name, limit)
