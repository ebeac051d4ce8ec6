"""Hostile input for the edges' fuzz tests: strings, numbers, JSON documents and request
bodies (deep nesting, huge numbers, odd encodings, content types), and the example budget.

The budget is bounded for CI (each fuzz test states its default); set EDGE_FUZZ_EXAMPLES
to run every edge's fuzz test longer, e.g. ``EDGE_FUZZ_EXAMPLES=20000``, and
EDGE_FUZZ_REPORT to a file path to have each one append its tally (cases per status
class) there.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.conftest import ON_POSTGRES


def budget(default: int) -> int:
    """The number of examples of a fuzz test: ``default`` unless EDGE_FUZZ_EXAMPLES says."""
    return int(os.environ.get("EDGE_FUZZ_EXAMPLES", default))


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def report(edge: str, tally: Counter) -> str:
    """One line saying how many cases ``edge`` answered with each kind of status (from
    :func:`status_class`); appended to EDGE_FUZZ_REPORT's file if it is set."""
    database = "postgresql" if ON_POSTGRES else "sqlite"
    kinds = ", ".join(f"{kind} {tally[kind]}" for kind in sorted(tally))
    line = f"{edge} on {database}: {sum(tally.values())} cases ({kinds}); "
    line += f"server errors {tally['5xx']}"
    path = os.environ.get("EDGE_FUZZ_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
    return line


# -- strings and numbers ------------------------------------------------------------------

ODD_STRINGS = [
    "",
    " ",
    "a" * 300,
    "x" * 5000,
    "\u00e9\u0301",  # combining accent
    "\ufeffbom",
    "\u202eevil",  # right-to-left override
    "🦄" * 3,
    "'; DROP TABLE users; --",
    '" or 1=1 --',
    "%00",
    "%s%s%n",
    "../../etc/passwd",
    "\\",
    "\r\nSet-Cookie: x=1",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "1e999",
    "NaN",
    "-0",
    "true",
    "null",
    "[]",
    "{}",
    # Control characters (refused by provisioning/text.py) and Unicode that folds oddly.
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\x7f",
    "\u0085",
    "\ud800",
    "\u0130" * 200,  # 400 characters once case-folded
    "Stra\u00dfe",
    "\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c2",
    "\uff21\uff22\uff23",
    "\ufb01le",
    "ab\U0010ffff",
    "\u00c4rzte",
]


def quoted(text: str) -> str:
    """``text`` percent-encoded as a client puts it in a URL: its UTF-8 bytes (a lone
    surrogate as the three bytes that would encode it, which are not UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def query_string(parameters: dict[str, str]) -> str:
    return "&".join(f"{quoted(name)}={quoted(value)}" for name, value in parameters.items())


@functools.cache
def strings(*, nul: bool = True) -> st.SearchStrategy[str]:
    """Text of every kind: odd fixed cases and generated Unicode (lone surrogates included;
    NUL unless ``nul`` is False)."""
    excluded = [] if nul else ["\x00"]
    generated = st.text(
        alphabet=st.characters(exclude_categories=(), exclude_characters=excluded), max_size=40
    )
    odd = [s for s in ODD_STRINGS if nul or "\x00" not in s]
    return st.sampled_from(odd) | generated


INTEGERS = st.sampled_from(
    [0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30]
) | st.integers(min_value=-(10**40), max_value=10**40)
FLOATS = st.sampled_from([1e300, -1e300, 5e-324, 0.5, -0.0, 1.7976931348623157e308]) | st.floats(
    allow_nan=False, allow_infinity=False
)


# Integers at the edges of what databases and JSON hold, as text.
EDGE_INTEGERS = [
    "2147483647",
    "2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "100000000000000000000",
    "1" + "0" * 40,
]


@functools.cache
def number_texts() -> st.SearchStrategy[str]:
    """Numbers as they come in query strings and paths."""
    return (
        st.sampled_from(EDGE_INTEGERS)
        | INTEGERS.map(str)
        | FLOATS.map(repr)
        | st.sampled_from(
            [
                "1e999",
                "-1e999",
                "NaN",
                "Infinity",
                "0x10",
                "1_000",
                "\u0661\u0662",
                "\uff11\uff12",
                "",
            ]
        )
    )


# Filter operands as a client writes them: JSON string literals (escapes included), and
# numbers, dates and words where a string belongs.
FILTER_LITERALS = [
    '"\\u0000"',
    '"a\\"b"',
    '"\\\\"',
    '"\\ud800"',
    '"\\udbff\\udfff"',
    '"\\x41"',
    '"unterminated',
    '"9999-12-31T23:59:59-23:59"',
    '"0001-01-01T00:00:00+23:59"',
    '"2027-01-01T00:00:00Z"',
    '"2027-13-45T99:00:00Z"',
    "true",
    "false",
    "null",
    "1e400",
    "-1e400",
    "1" + "0" * 400,
]


@functools.cache
def filter_operands() -> st.SearchStrategy[str]:
    """Operands of SCIM filters: any string as a JSON literal, escapes, huge numbers, dates."""
    return (
        strings().map(lambda s: json.dumps(s, ensure_ascii=False))
        | strings().map(json.dumps)
        | st.sampled_from(FILTER_LITERALS)
        | number_texts()
    )


# -- JSON -----------------------------------------------------------------------------------


@functools.cache
def json_values(keys: tuple[str, ...] = (), *, nul: bool = True) -> st.SearchStrategy[Any]:
    """Any JSON value, objects keyed mostly by ``keys`` (the fields an edge reads)."""
    scalars = st.none() | st.booleans() | INTEGERS | FLOATS | strings(nul=nul)
    key_names = st.sampled_from(keys) | strings(nul=nul) if keys else strings(nul=nul)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(key_names, children, max_size=5)
        ),
        max_leaves=12,
    )


def nested(depth: int, inner: str = "[]") -> bytes:
    """JSON arrays and objects nested ``depth`` deep around ``inner``."""
    opening, closing = [], []
    for level in range(depth):
        if level % 3 == 2:
            opening.append('{"k":')
            closing.append("}")
        else:
            opening.append("[")
            closing.append("]")
    return ("".join(opening) + inner + "".join(reversed(closing))).encode()


JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/scim+json",
    "application/merge-patch+json",
]
OTHER_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=zz",
    "application/xml",
    "application/jsonx",
    "json",
    "",
]


def encodings(document: Any) -> st.SearchStrategy[bytes]:
    """``document`` as JSON bytes, as sent right or in odd encodings."""
    text = json.dumps(document, ensure_ascii=False, allow_nan=False)
    return st.sampled_from(
        [
            json.dumps(document).encode(),
            text.encode("utf-8", "surrogatepass"),
            b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass"),
            text.encode("utf-16", "surrogatepass"),
            text.encode("utf-32", "surrogatepass"),
            text.encode("latin-1", "replace"),
            text.encode("utf-8", "surrogatepass")[:-1],  # cut short
            text.encode("utf-8", "surrogatepass") + b"\xff",
        ]
    )


@functools.cache
def raw_json_texts() -> st.SearchStrategy[bytes]:
    """JSON texts that a serialiser would not write: huge numbers, constants, duplicates."""
    return st.sampled_from(
        [
            b'{"a": 1e999}',
            b'{"a": -1e999}',
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": 1' + b"0" * 5000 + b"}",
            b'{"a": 1, "a": 2}',
            b'{"a": "\\ud800"}',
            b'{"a": "\\u0000"}',
            b"[] []",
            b"  ",
            b"",
            b"\x00",
        ]
    )


@functools.cache
def bodies(
    documents: st.SearchStrategy[Any], *, json_type: str = "application/json"
) -> st.SearchStrategy[tuple[bytes | None, str | None]]:
    """(body, Content-Type) pairs: ``documents`` sent as JSON mostly, and also in odd
    encodings, nested past every limit, as JSON no serialiser writes, as raw bytes, under
    other media types or none, or no body at all."""
    as_json = documents.map(lambda d: json.dumps(d).encode())
    payloads = st.one_of(
        as_json,
        as_json,
        as_json,
        documents.flatmap(encodings),
        st.integers(min_value=1, max_value=3000).map(nested),
        st.integers(min_value=1, max_value=3000).map(lambda n: nested(n, '"x"')),
        raw_json_texts(),
        st.binary(max_size=64),
    )
    content_types = st.one_of(
        st.just(json_type),
        st.just(json_type),
        st.sampled_from(JSON_TYPES + OTHER_TYPES),
        st.none(),
    )
    return st.tuples(st.none() | payloads, content_types) | st.tuples(payloads, content_types)
