"""Answer shaping: how a stored resource becomes what a client is sent, and the answers kept.

- :class:`Shaping`, scim2-server's service with its answer steps overridden (publishing
  in place, the readings of ``attributes`` kept, a search's envelope built once, 200 for
  PATCH). Each is one of :class:`scim2_server.service.ScimService`'s own steps, overridden
  as a subclass may; :meth:`Shaping.publish` repeats the body of ``ScimService.publish``
  but for the deep copy, and would go if scim2-server took a flag to publish in place
  (the storage builds every resource afresh) and cached a model's reference paths.
- :class:`Answers` and :class:`Kept`: the answers of reads, by what they were built from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from scim2_models import (
    Context,
    Path,
    Reference,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
)
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from scim2_server.storage import SearchPage
from scim2_server.utils import parametrize


class Shaping(ScimService):
    """scim2-server's service, with the steps that shape its answers made cheaper; what
    a client is sent is the same (``tests/scim/test_search_answers.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parameters: dict[tuple[Any, ...], ResponseParameters[Any]] = {}
        self._envelopes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def publish(self, base_url: str, resource: Resource[Any]) -> Resource[Any]:
        """The resource in the form sent to the client: scim2-server's publishing, in place.

        As :meth:`ScimService.publish`: ``meta.location`` is set, references to other
        resources (``Users/{id}``, ``Groups/{id}``) become their URLs, and the version is
        left out when ETags are not supported. Two differences, both for speed, neither
        visible to a client: the resource is changed in place rather than deep-copied,
        because :class:`scim.storage.SqlStorage` builds every resource it returns afresh
        from rows (nothing else holds it); and the reference attributes of each model are
        found once, not walked again for every resource published.
        """
        assert resource.meta is not None and resource.id is not None
        update: dict[str, Any] = {
            "location": self.resource_location(
                base_url, self.get_resource_type_of(resource), resource.id
            )
        }
        if not self.etag_supported:
            update["version"] = None
        resource.meta = resource.meta.model_copy(update=update)
        for path, sub_field in reference_paths(type(resource)):
            if sub_field is None:
                path.set(resource, self._locate(base_url, path.get(resource)), strict=False)
                continue
            entries = path.get(resource)
            for entry in entries if isinstance(entries, list) else [entries]:
                if entry is not None:
                    reference = getattr(entry, sub_field)
                    setattr(entry, sub_field, self._locate(base_url, reference))
        return resource

    def _locate(self, base_url: str, reference: Any) -> Any:
        if isinstance(reference, list):
            return [self._locate(base_url, item) for item in reference]
        if reference is None:
            return None
        return self.reference_location(base_url, reference)

    def read_response_parameters(
        self, resource_type: ResourceType, query: Any
    ) -> ResponseParameters[Any]:
        """``attributes`` and ``excludedAttributes`` read as scim2-server reads them.

        The parameters depend on the two strings alone and nothing changes them, so each
        reading is kept and given again (at most 256: the strings are the client's).
        """
        key = (resource_type.id, query.get("attributes"), query.get("excludedAttributes"))
        read = super().read_response_parameters
        return once(self._parameters, key, lambda: read(resource_type, query))

    def listing(
        self,
        resource_types: list[ResourceType],
        page: SearchPage,
        search_request: SearchRequest[Any],
        entries: list[dict[str, Any]],
    ) -> ScimResponse:
        """:meth:`ScimService.search_response` for a page whose resources are already
        published and dumped (``entries``, as scim2-server dumps each one).

        scim2-server builds its ``ListResponse`` from the dumped resources, which validates
        each of them once more and dumps it again; here the envelope (totals, cursors,
        start index) is scim2-server's own, built for an empty page, and the entries are
        then set in it as they are. An index page's envelope depends on its total and
        start index alone (no cursor is sealed in it), so those are built once each (at
        most 256 kept).
        """

        def envelope() -> dict[str, Any]:
            empty = SearchPage(page.total, [], page.next, page.previous)
            body = self.search_response("", resource_types, empty, search_request).body
            assert isinstance(body, dict)
            return body

        if search_request.cursor is None:
            types = tuple(str(rt.id) for rt in resource_types)
            key = (types, page.total, search_request.start_index)
            kept = once(self._envelopes, key, envelope)
        else:
            kept = envelope()
        body = {**kept, "itemsPerPage": len(entries), "Resources": entries}
        return ScimResponse(HTTPStatus.OK, body)

    def patch_response(
        self,
        base_url: str,
        resource: Resource[Any],
        response_parameters: ResponseParameters[Any],
    ) -> ScimResponse:
        """200 with the resource, as Okta expects (RFC 7644 section 3.5.2 allows either)."""
        return self.resource_response(
            self.publish(base_url, resource),
            Context.RESOURCE_REPLACEMENT_RESPONSE,
            response_parameters,
        )


@functools.cache
def reference_paths(model: type[Resource[Any]]) -> list[tuple[Path[Any], str | None]]:
    """The attributes of ``model`` that refer to other resources, as scim2-server finds them
    when publishing: each as (path, sub-attribute holding the reference, or None when the
    attribute itself is the reference). A model's schema does not change, so neither do these.
    """
    found: list[tuple[Path[Any], str | None]] = []
    for path in parametrize(Path, model).iter_paths(target_type=[Reference]):
        binding = path.resolve()
        assert binding is not None
        reference_types = set(binding.target_type.__reference_types__)
        if not reference_types or reference_types & {"external", "uri"}:
            continue
        if binding.sub_field_name is None:
            found.append((path, None))
        else:
            head = f"{path.schema}:{path.parts[0]}" if path.schema else path.parts[0]
            found.append((Path(head), binding.sub_field_name))
    return found


def once(table: dict[Any, Any], key: Any, build: Callable[[], Any]) -> Any:
    """``table[key]``, built and kept when missing; at most 256 kept, as keys come from
    clients. For values that depend on their key alone and that nothing changes."""
    value = table.get(key)
    if value is None:
        value = build()
        if len(table) < 256:
            table[key] = value
    return value


class Kept(ScimResponse):
    """An answer as :class:`Answers` keeps it: never changed once built, so its JSON text
    is serialised once, when first sent
    (:meth:`scim.server.ProvisioningScimServer._to_response`)."""

    @functools.cached_property
    def text(self) -> str:
        return json.dumps(self.body)


class Answers:
    """The answers to the last reads of one resource, by what they were built from.

    A read's answer depends only on the stored document (:class:`scim.mapping.Document`:
    the rows of the resource and of its groups, grants or members), the base URL and the
    ``attributes`` / ``excludedAttributes`` asked for. Keyed by all of them (by their
    SHA-256), an answer is never stale: the rows are read on every request, and a change
    to any of them makes another key. What it saves is scim2-server's validating,
    publishing and serialising of an unchanged resource, which costs more than reading
    it. At most ``size`` answers are kept, the least recently used dropped first;
    documents larger than ``max_key`` characters (a group of a hundred members or more)
    are not kept. A User's answer is 1-2 KB: about 5-10 MB per process when full.
    """

    def __init__(self, size: int = 4096, max_key: int = 16_384) -> None:
        self.size = size
        self.max_key = max_key
        self._answers: OrderedDict[bytes, Kept] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: tuple[str, ...]) -> bytes:
        return hashlib.sha256("\0".join(key).encode()).digest()

    def get(self, key: tuple[str, ...]) -> Kept | None:
        digest = self._digest(key)
        with self._lock:
            answer = self._answers.get(digest)
            if answer is not None:
                self._answers.move_to_end(digest)
            return answer

    def put(self, key: tuple[str, ...], answer: ScimResponse) -> Kept:
        """Keep ``answer`` (unless its document is too large); returns it as kept."""
        kept = Kept(answer.status, answer.body, answer.headers)
        if len(key[-1]) > self.max_key:
            return kept
        digest = self._digest(key)
        with self._lock:
            self._answers[digest] = kept
            self._answers.move_to_end(digest)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return kept


def names(paths: list[Any] | None) -> str:
    """The attribute paths asked for, as a part of an :class:`Answers` key."""
    return ",".join(str(p) for p in paths or ())
