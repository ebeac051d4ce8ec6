"""Request bodies, one rule for every edge: a size limit counted as the body streams, and a
JSON parse within a depth limit; a refusal is a 4xx that each edge answers in its own format.

Before any handler (:func:`install`), a body whose ``Content-Length`` passes the limit
(``PROVISIONING_MAX_REQUEST_BYTES``) is refused with 413 unread, and a chunked body is
read here, counting bytes as they arrive: past the limit it is 413, never a body cut at
the limit and then misread. An edge then asks for the request's JSON document
(:func:`document`): the body must be sent as JSON (``application/json`` or any
``application/*+json``), be UTF-8, be JSON as RFC 8259 has it (no ``NaN``, no number
out of a float's range), and nest at most :data:`MAX_DEPTH` levels. Refusals are
:class:`Refused` (an HTTP error): the admin API and the hooks answer them as
problem+json, the SCIM edge as SCIM errors.
"""

from __future__ import annotations

import codecs
import io
import json
import math
import operator
import re
from itertools import accumulate, repeat
from typing import Any

from flask import Flask, g, request
from flask import Request as FlaskRequest
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import get_content_length

MAX_DEPTH = 64
"""How many levels of objects and arrays a JSON body may nest. The deepest document the
service takes is a SCIM bulk request (an operation's PATCH value holding a complex
attribute: about 6 levels); a thousand levels exhaust the parser's stack."""

_READ = 64 * 1024
_NOT_PARSED = object()


class Refused(HTTPException):
    """A body the rule refuses: 400 (not JSON, or nested too deep), 413 (too large),
    415 (not sent as JSON). ``kind`` names the problem (problem+json's type)."""

    def __init__(self, code: int, kind: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.kind = kind


class _NotJson(Exception):
    """Raised from the decoder's hooks: what RFC 8259 does not allow."""


def too_large(limit: int) -> Refused:
    return Refused(
        413,
        "body-too-large",
        f"the request body is larger than the {limit} bytes this service accepts "
        "(PROVISIONING_MAX_REQUEST_BYTES)",
    )


def _too_deep() -> Refused:
    return Refused(
        400, "invalid-json", f"the JSON body is nested more than {MAX_DEPTH} levels deep"
    )


def _not_json(detail: str) -> Refused:
    return Refused(400, "invalid-json", detail)


# -- size -----------------------------------------------------------------------------------


def _read_within_limit() -> None:
    """Before any handler: refuse a body over the limit; read a chunked body whole here.

    A chunked body (no ``Content-Length``) is read as it streams and counted; within the
    limit it is handed on as a body of known length, so every handler reads it whole.
    """
    limit = request.max_content_length
    if limit is None:
        return
    environ = request.environ
    length = get_content_length(environ)
    if length is not None:
        if length > limit:
            raise too_large(limit)
        return
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    if not environ.get("wsgi.input_terminated"):
        return  # a server that does not de-chunk: werkzeug hands handlers no body
    stream = environ["wsgi.input"]
    received = bytearray()
    while len(received) <= limit:
        chunk = stream.read(min(_READ, limit + 1 - len(received)))
        if not chunk:
            break
        received += chunk
    if len(received) > limit:
        raise too_large(limit)
    environ["wsgi.input"] = io.BytesIO(bytes(received))
    environ["CONTENT_LENGTH"] = str(len(received))
    del environ["HTTP_TRANSFER_ENCODING"]


# -- JSON -----------------------------------------------------------------------------------


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/*+json`` (SCIM's ``application/scim+json``)."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _constant(name: str) -> Any:
    raise _NotJson(f"the JSON body holds {name}, which is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJson(f"the number {text[:40]} in the JSON body is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float)


# What nests in a JSON text once its strings are taken out: brackets, as steps up and down.
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth(text: bytes) -> int:
    """How deep the valid JSON ``text`` nests, counted in C: its strings removed, each
    bracket a step up or down, the highest running sum (a tree walk took 4 times as long)."""
    steps = _STRINGS.sub(b"", text).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(map(operator.sub, steps, repeat(1))), default=0)


def parse(raw: bytes) -> Any:
    """The JSON document ``raw`` holds; :class:`Refused` (400) saying why it is not one."""
    if not raw.strip():
        raise _not_json("the request body is empty: this operation takes a JSON document")
    if raw.startswith(codecs.BOM_UTF8):
        raise _not_json("the JSON body starts with a byte order mark: send UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(
            f"the request body is not UTF-8 text (byte {exc.start}): send JSON as UTF-8"
        ) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise _too_deep() from None
    except _NotJson as exc:
        raise _not_json(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise _not_json(f"the request body is not JSON: {exc}") from None
    except ValueError:  # an integer past Python's limit on digits
        raise _not_json("a number in the JSON body has too many digits") from None
    # Brackets (those in strings too) bound the depth: most bodies need no count.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(raw) > MAX_DEPTH:
        raise _too_deep()
    return value


def raw() -> bytes:
    """The current request's body: within the limit, as :func:`install` made sure."""
    return request.get_data(cache=True)


def check_media_type(content_type: str | None, *, untyped_is_json: bool = False) -> None:
    """:class:`Refused` (415) unless the body is sent as JSON. A body without
    ``Content-Type`` is refused unless ``untyped_is_json``: SCIM reads it as JSON (RFC 7644
    section 3.8), and so does the Okta hook."""
    content_type = (content_type or "").strip()
    if not content_type:
        if untyped_is_json:
            return
        raise Refused(
            415,
            "unsupported-media-type",
            "send the body as JSON, with Content-Type: application/json "
            "(the request has no Content-Type)",
        )
    if not is_json(content_type):
        media_type = content_type.partition(";")[0].strip()
        raise Refused(
            415,
            "unsupported-media-type",
            f"the body is sent as {media_type!r}: send it as JSON (Content-Type: application/json)",
        )


def document(*, untyped_is_json: bool = False) -> Any:
    """The current request's JSON document, parsed once; :class:`Refused` if there is none
    (:func:`check_media_type`, then :func:`parse`)."""
    check_media_type(request.headers.get("Content-Type"), untyped_is_json=untyped_is_json)
    parsed = g.get("provisioning_body", _NOT_PARSED)
    if parsed is _NOT_PARSED:
        parsed = g.provisioning_body = parse(raw())
    return parsed


class Request(FlaskRequest):
    """Flask's request, whose JSON is the rule's :func:`document` (flask-openapi3 reads
    bodies through ``get_json``)."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        return document()


def install(app: Flask) -> None:
    """Apply the size limit before any handler, and read JSON through :func:`document`."""
    app.request_class = Request
    app.before_request(_read_within_limit)
