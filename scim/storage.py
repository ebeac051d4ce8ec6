"""scim2-server's ScimStorage over the service's tables; every write goes through the lifecycle.

One SCIM operation is one unit of work (:meth:`SqlStorage.operation`): reads
use a reader session, and the first write ends it and opens a transaction in
which the stored version is checked again (so a concurrent change answers
412) before the people lifecycle (:mod:`provisioning.people.lifecycle`) records
the change, calls the entitlement engine and writes the audit events. The
transaction commits when the operation ends without error, and rolls back
otherwise: nothing is half-written.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, NamedTuple

from scim2_models import (
    InvalidCursorException,
    InvalidValueException,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
    UniquenessException,
)
from scim2_server.storage import ScimStorage, SearchPage
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from provisioning.audit.log import Origin, Source
from provisioning.connectors.models import Connector
from provisioning.database import Database, Reader, connection_of
from provisioning.entitlements.models import Grant
from provisioning.hotpath import Prepared
from provisioning.identity.models import Group, Membership, MembershipSource, User
from provisioning.people import lifecycle
from provisioning.settings import DEFAULTS, Settings
from provisioning.types import json_aggregate, json_array, json_rows
from scim import mapping
from scim.filters import Compiler, keyset
from scim.resources import provider

DEFAULT_ORIGIN = Origin(actor="scim", source=Source.SCIM)

_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("scim_origin", default=None)


@contextlib.contextmanager
def acting_as(origin: Origin) -> Iterator[None]:
    """Attribute the writes made within to ``origin`` (the authenticated token)."""
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def set_origin(origin: Origin | None) -> contextvars.Token:
    return _origin.set(origin)


def reset_origin(token: contextvars.Token) -> None:
    _origin.reset(token)


def current_origin() -> Origin:
    return _origin.get() or DEFAULT_ORIGIN


class _Unit:
    """The connections of one SCIM operation: a hot reader until the first write, then a
    transaction (:meth:`provisioning.database.Database.hot_reader`)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._reader: contextlib.AbstractContextManager[Connection] | None = None
        self._writer: contextlib.AbstractContextManager[Session] | None = None
        self.session: Reader | None = None
        self.writing = False

    def read(self, lookups: bool = False) -> Reader:
        """The operation's reader; ``lookups`` when its first read is by primary key."""
        if self.session is None:
            self._reader = self.database.hot_reader(lookups=lookups)
            self.session = self._reader.__enter__()
        return self.session

    def write(self) -> Session:
        if self.writing:
            assert isinstance(self.session, Session)
            return self.session
        if self._reader is not None:
            self._reader.__exit__(None, None, None)
            self._reader = None
        self._writer = self.database.transaction()
        self.session = self._writer.__enter__()
        self.writing = True
        return self.session

    def commit(self) -> None:
        """Commit the writes made so far, if any; a later read or write starts afresh."""
        if self._writer is not None:
            self._writer.__exit__(None, None, None)
            self._writer = None
            self.session = None
            self.writing = False

    def close(self, exc: BaseException | None) -> None:
        if self._reader is not None:
            self._reader.__exit__(None, None, None)
        if self._writer is not None:
            if exc is None:
                self._writer.__exit__(None, None, None)
            else:
                self._writer.__exit__(type(exc), exc, exc.__traceback__)
        self.session = None


class SqlStorage(ScimStorage):
    """SCIM Users and Groups stored in the ``users``, ``groups`` and ``memberships`` tables."""

    supports_cursors = True

    def __init__(self, database: Database, settings: Settings = DEFAULTS) -> None:
        self.database = database
        self.settings = settings
        self._unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(
            f"scim_unit_{id(self)}", default=None
        )

    # -- units of work -----------------------------------------------------

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        if self._unit.get() is not None:
            yield
            return
        unit = _Unit(self.database)
        token = self._unit.set(unit)
        try:
            yield
        except BaseException as exc:
            unit.close(exc)
            raise
        else:
            unit.close(None)
        finally:
            self._unit.reset(token)

    @contextlib.contextmanager
    def _session(self, *, write: bool, lookups: bool = False) -> Iterator[Any]:
        unit = self._unit.get()
        if unit is not None:
            yield unit.write() if write else unit.read(lookups)
            return
        with self.operation():
            unit = self._unit.get()
            assert unit is not None
            yield unit.write() if write else unit.read(lookups)

    def _codepoint_order(self) -> bool:
        """Whether the database orders strings by code point (SQLite; PostgreSQL in C)."""
        if not hasattr(self, "_codepoint"):
            self._codepoint = True
            if self.database.dialect == "postgresql":
                with self.database.engine.connect() as conn:
                    collation = conn.exec_driver_sql(
                        "SELECT datcollate FROM pg_database WHERE datname = current_database()"
                    ).scalar()
                self._codepoint = str(collation).lower() in ("c", "posix", "c.utf-8", "c.utf8")
        return self._codepoint

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _is_user(resource_type: ResourceType) -> bool:
        if resource_type.name == "User":
            return True
        if resource_type.name == "Group":
            return False
        raise NotFoundException(detail=f"no resource type {resource_type.name!r}")

    def _model(self, resource_type: ResourceType) -> type[Resource[Any]]:
        if not hasattr(self, "_provider"):
            self._provider = provider()
        return self._provider.model_for(resource_type)  # type: ignore[return-value]

    @staticmethod
    def _user_row(session: Session, resource_id: str | None, *, lock: bool = False) -> User:
        ident = mapping.parse_id(resource_id)
        query = select(User).where(User.id == ident, User.deleted_at.is_(None))
        query = query.execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        user = session.scalar(query) if ident is not None else None
        if user is None:
            raise NotFoundException(detail=f"User {resource_id!r} not found")
        return user

    @staticmethod
    def _group_row(session: Session, resource_id: str | None, *, lock: bool = False) -> Group:
        ident = mapping.parse_id(resource_id)
        query = select(Group).where(Group.id == ident)
        query = query.execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        group = session.scalar(query) if ident is not None else None
        if group is None:
            raise NotFoundException(detail=f"Group {resource_id!r} not found")
        return group

    @staticmethod
    def _check_version(row: User | Group, expected_version: str | None) -> None:
        if expected_version is not None and mapping.version_tag(row.version) != expected_version:
            raise PreconditionFailedException(
                detail=f"the resource is at version {mapping.version_tag(row.version)}, "
                f"not {expected_version}"
            )

    @staticmethod
    def _user_relations(
        session: Session, ids: list[uuid.UUID], *, groups: bool = True, grants: bool = True
    ) -> tuple[dict[uuid.UUID, list[Group]], dict[uuid.UUID, list[tuple[Grant, Connector]]]]:
        by_user_groups: dict[uuid.UUID, list[Group]] = defaultdict(list)
        by_user_grants: dict[uuid.UUID, list[tuple[Grant, Connector]]] = defaultdict(list)
        if not ids:
            return by_user_groups, by_user_grants
        if groups:
            for row in _related(session, _GROUPS_OF_USERS, _GROUPS_OF_USER, ids):
                by_user_groups[row.user_id].append(row)
        if grants:
            for row in _related(session, _GRANTS_OF_USERS, _GRANTS_OF_USER, ids):
                by_user_grants[row.user_id].append((row, row))
        return by_user_groups, by_user_grants

    def _user_resources(
        self, session: Session, model: type[Resource[Any]], users: list[User], wants=None
    ) -> list[Resource[Any]]:
        return [d.resource(model) for d in self._user_documents(session, users, wants)]

    def _user_documents(
        self, session: Session, users: list[User], wants=None
    ) -> list[mapping.Document]:
        wants = wants or (lambda _name: True)
        groups, grants = self._user_relations(
            session,
            [u.id for u in users],
            groups=wants("groups"),
            grants=wants("entitlements"),
        )
        return [mapping.user_document(u, groups.get(u.id, []), grants.get(u.id, [])) for u in users]

    @staticmethod
    def _members(session: Session, group_ids: list[uuid.UUID]):
        by_group: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        if not group_ids:
            return by_group
        rows = _related(session, _MEMBERS_OF_GROUPS, _MEMBERS_OF_GROUP, group_ids)
        for group_id, user_id in rows:
            by_group[group_id].append(user_id)
        return by_group

    def _group_resources(
        self, session: Session, model: type[Resource[Any]], groups: list[Group], members=True
    ) -> list[Resource[Any]]:
        return [d.resource(model) for d in self._group_documents(session, groups, members)]

    def _group_documents(
        self, session: Session, groups: list[Group], members=True
    ) -> list[mapping.Document]:
        by_group = self._members(session, [g.id for g in groups]) if members else {}
        return [mapping.group_document(g, by_group.get(g.id)) for g in groups]

    # -- reads -------------------------------------------------------------

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        document = self.document(
            resource_type, resource_id, response_parameters=response_parameters
        )
        return document.resource(self._model(resource_type))

    def document(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> mapping.Document:
        """What :meth:`get` returns, before validation.

        :raises NotFoundException: no such resource (a deleted user included).
        """
        wants = _wanted(response_parameters)
        # By primary key: point lookups (generic plans are the plans on PostgreSQL).
        with self._session(write=False, lookups=True) as session:
            ident = mapping.parse_id(resource_id)
            if self._is_user(resource_type):
                user = _user_read(connection_of(session), "id", ident) if ident else None
                if user is None:
                    raise NotFoundException(detail=f"User {resource_id!r} not found")
                return _user_document(user, wants)
            group = _GROUP_BY_ID.first(connection_of(session), {"id": ident}) if ident else None
            if group is None:
                raise NotFoundException(detail=f"Group {resource_id!r} not found")
            return self._group_documents(session, [group], wants("members"))[0]

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        page = self.search_documents(resource_types, search_request, position=position)
        resources = [d.resource(self._model(rt)) for rt, d in page.resources]
        return SearchPage(page.total, resources, page.next, page.previous)

    def search_documents(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        """What :meth:`search` returns, before validation: a page whose ``resources`` are
        (resource type, :class:`scim.mapping.Document`) pairs."""
        names = {rt.name: rt for rt in resource_types}
        if len(names) != 1:
            return self._search_root(list(names.values()), search_request, position)
        (resource_type,) = names.values()
        unique = self._unique_page(resource_type, search_request)
        if unique is not None:
            return unique
        is_user, compiler, conditions, key = self._matching(resource_type, search_request)
        table = User if is_user else Group
        descending = search_request.sort_order == SearchRequest.SortOrder.descending
        wants = _wanted(search_request)
        by_cursor = search_request.cursor is not None
        with self._session(write=False) as session:
            total = session.scalar(select(func.count()).select_from(table).where(*conditions))
            if search_request.count == 0:
                return SearchPage(total or 0, [])
            core = table.__table__
            columns = [core] if key is None else [core, key.label("sort_key")]
            if not by_cursor:
                query = select(*columns).where(*conditions)
                query = query.order_by(*compiler.order_by(key, descending))
                rows = _index_page(session, query, search_request)
                documents = self._documents(session, resource_type, rows, wants)
                return SearchPage(total or 0, documents)
            return self._cursor_page(
                session,
                resource_type,
                compiler,
                columns,
                conditions,
                key,
                descending,
                search_request.count,
                position,
                total,
                wants,
            )

    def _unique_page(
        self, resource_type: ResourceType, search_request: SearchRequest[Any]
    ) -> SearchPage | None:
        """The index page of a search whose filter is ``eq`` on a unique attribute of
        users (:meth:`scim.filters.Compiler.unique`), found as a read by id is: one
        statement for the user, its groups and its grants. None for any other search.

        At most one user matches, so the total is the number found, and no order applies.
        """
        if search_request.filter is None or search_request.cursor is not None:
            return None
        if not self._is_user(resource_type):
            return None
        found = self._compiler(resource_type).unique(search_request.filter.ast)
        if found is None:
            return None
        column, value = found
        with self._session(write=False, lookups=True) as session:
            user = _user_read(connection_of(session), column, value)
        if user is None:
            return SearchPage(0, [])
        start = search_request.start_index_0 or 0
        if start or search_request.count == 0:
            return SearchPage(1, [])
        return SearchPage(1, [(resource_type, _user_document(user, _wanted(search_request)))])

    def _cursor_page(
        self,
        session,
        resource_type,
        compiler,
        columns,
        conditions,
        key,
        descending,
        count,
        position,
        total,
        wants,
    ) -> SearchPage:
        """A page after (or before) the position of a cursor (RFC 9865), by keyset."""
        backwards = False
        where = list(conditions)
        if position is not None:
            direction, anchor = _read_position(position, key is not None)
            backwards = direction == "previous"
            # "after" in the page order; the ascending order is reversed when descending.
            after_ascending = (direction == "next") != descending
            where.append(compiler.beyond(key, anchor, after=after_ascending))
        order = compiler.order_by(key, descending != backwards)
        query = select(*columns).where(*where).order_by(*order)
        rows, more = _fetch_page(session, query, count, backwards)
        page = SearchPage(total or 0, self._documents(session, resource_type, rows, wants))
        if rows:
            first, last = rows[0], rows[-1]
            has_next = more if not backwards else True
            has_previous = position is not None if not backwards else more
            if has_next:
                page.next = _position("next", last, key is not None)
            if has_previous:
                page.previous = _position("previous", first, key is not None)
        return page

    def _search_root(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        position: Any,
    ) -> SearchPage:
        """Users and Groups searched as one collection, at the root (RFC 7644 section 3.4.2.1).

        The filter is compiled for each type. A comparison or presence test on an
        attribute a type does not declare is false for that type's resources (as in
        scim2-models' ``ScimFilter.match`` and scim2-server's storage contract), so
        ``userName pr`` finds users only, and ``not (userName eq "x")`` every group.

        The (rank, id, sort value) of the matching rows of both tables are one
        ``UNION ALL``, counted, ordered and paged in SQL; only the rows of the page are
        then read in full. The order is total: with ``sortBy``, the sort value across
        both types (missing values last ascending, first descending; a type without
        the attribute has none), then Users before Groups, then the id; without it,
        Users then Groups, each by id. Index pages and cursor pages (keyset pages on
        that order, RFC 9865) are both served.
        """
        found, types = self._root_union(resource_types, search_request)
        sorted_ = "sort_key" in found.c
        key = found.c.sort_key if sorted_ else None
        terms = ([key.is_(None), key] if key is not None else []) + [found.c.rank, found.c.id]
        descending = search_request.sort_order == SearchRequest.SortOrder.descending
        wants = _wanted(search_request)
        count = search_request.count
        with self._session(write=False) as session:
            total = session.scalar(select(func.count()).select_from(found)) or 0
            if count == 0:
                return SearchPage(total, [])
            columns = [found.c.rank, found.c.id] + ([key] if key is not None else [])
            if search_request.cursor is None:
                query = select(*columns).order_by(*_ordered(terms, descending))
                rows = _index_page(session, query, search_request)
                return SearchPage(total, self._root_documents(session, types, rows, wants))
            backwards = False
            query = select(*columns)
            if position is not None:
                direction, (missing, value, ident) = _read_position(position, sorted_)
                rank = position.get("r")
                if rank not in types:
                    raise InvalidCursorException
                backwards = direction == "previous"
                after = (direction == "next") != descending
                ties = _lexically(found.c.rank, rank, found.c.id, ident, after=after)
                query = query.where(keyset(key, missing, value, ties, after=after))
            query = query.order_by(*_ordered(terms, descending != backwards))
            rows, more = _fetch_page(session, query, count, backwards)
            page = SearchPage(total, self._root_documents(session, types, rows, wants))
            if rows:
                first, last = rows[0], rows[-1]
                has_next = more if not backwards else True
                has_previous = position is not None if not backwards else more
                if has_next:
                    page.next = {**_position("next", last, sorted_), "r": last.rank}
                if has_previous:
                    page.previous = {**_position("previous", first, sorted_), "r": first.rank}
            return page

    def _compiler(self, resource_type: ResourceType) -> Compiler:
        return Compiler(
            self._model(resource_type),
            User if self._is_user(resource_type) else Group,
            self.database.dialect,
            codepoint_order=self._codepoint_order(),
        )

    def _matching(self, resource_type: ResourceType, search_request: SearchRequest[Any]):
        """Whether ``resource_type`` is User, its filter compiler, the SQL conditions of the
        request's filter on its table, and its sort key (None without ``sortBy``)."""
        is_user = self._is_user(resource_type)
        compiler = self._compiler(resource_type)
        model = compiler.model
        conditions = [User.deleted_at.is_(None)] if is_user else []
        if search_request.filter is not None:
            conditions.append(compiler.where(search_request.filter.ast))
        binding = search_request.sort_binding(model) if search_request.sort_by else None
        return is_user, compiler, conditions, compiler.sort_key(binding)

    def _root_union(self, resource_types: list[ResourceType], search_request: SearchRequest[Any]):
        """The (rank, id[, sort_key]) of the matching rows of each type, as one UNION ALL
        subquery; and the resource type of each rank."""
        branches = []
        for resource_type in resource_types:
            is_user, _, conditions, key = self._matching(resource_type, search_request)
            branches.append((_RANKS[resource_type.name], is_user, key, conditions))
        keys = [key for *_, key, _ in branches if key is not None]
        selects = []
        for rank, is_user, key, conditions in branches:
            table = User if is_user else Group
            columns = [literal_column(str(rank), Integer).label("rank"), table.id.label("id")]
            if keys:
                # A type without the attribute sorts as missing: NULL of the others' type.
                missing = type_coerce(null(), keys[0].type)
                columns.append((key if key is not None else missing).label("sort_key"))
            selects.append(select(*columns).where(*conditions))
        types = {_RANKS[rt.name]: rt for rt in resource_types}
        return union_all(*selects).subquery("found"), types

    def _root_documents(
        self, session, types, rows, wants
    ) -> list[tuple[ResourceType, mapping.Document]]:
        """The documents of a root page's (rank, id) rows, in the rows' order."""
        ids: dict[int, list[uuid.UUID]] = defaultdict(list)
        for row in rows:
            ids[row.rank].append(row.id)
        found: dict[tuple[int, str], tuple[ResourceType, mapping.Document]] = {}
        for rank, idents in ids.items():
            resource_type = types[rank]
            query = _USERS_BY_IDS if self._is_user(resource_type) else _GROUPS_BY_IDS
            full = list(session.execute(query, {"ids": idents}))
            for entry in self._documents(session, resource_type, full, wants):
                found[rank, entry[1].attributes["id"]] = entry
        # A row deleted since the page was chosen is left out.
        keys = [(row.rank, str(row.id)) for row in rows]
        return [found[k] for k in keys if k in found]

    def _documents(
        self, session, resource_type: ResourceType, rows, wants
    ) -> list[tuple[ResourceType, mapping.Document]]:
        """The documents of ``rows`` (of ``resource_type``'s table), each with its type."""
        if self._is_user(resource_type):
            documents = self._user_documents(session, rows, wants)
        else:
            documents = self._group_documents(session, rows, wants("members"))
        return [(resource_type, d) for d in documents]

    # -- writes ------------------------------------------------------------

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        """Create the resource, commit, and return it built from the stored document.

        In scim2-server's flows a creation is the last call of its operation (``POST``, a
        bulk ``POST``): its writes are committed here, before the resource returned is
        validated, so the writers' lock is not held meanwhile (``docs/performance.md``,
        "A user create"). A write after it in the same operation would be a transaction
        of its own.
        """
        document = self.create_document(resource_type, resource)
        unit = self._unit.get()
        if unit is not None:
            unit.commit()
        return document.resource(self._model(resource_type))

    def create_document(
        self, resource_type: ResourceType, resource: Resource[Any]
    ) -> mapping.Document:
        """Create the resource; the document it is stored as.

        What needs no database (reading the resource's values, checking them, building
        the new row's) is done before the transaction, and so before the writers' lock
        (:meth:`provisioning.database.Database.transaction`) is waited for and held.
        """
        origin = current_origin()
        if self._is_user(resource_type):
            values = mapping.user_fields(resource)
            fields = dict(values.fields)
            user_name = fields.pop("user_name")
            if not user_name:
                raise InvalidValueException(detail="a User needs a userName")
            # userName and externalId are checked by the insert itself (the unique
            # indexes): a clash is an IdentityError, and nothing is written.
            try:
                new = lifecycle.new_user(
                    user_name=user_name, scim_attributes=values.extras, **fields
                )
                with self._session(write=True) as session:
                    user = lifecycle.add_user(session, origin, new)
            except lifecycle.IdentityError as exc:
                raise UniquenessException(detail=str(exc)) from None
            # A new user is in no group and holds no grant yet.
            return mapping.user_document(user, [], [])
        group_values = mapping.group_fields(resource)
        with self._session(write=True) as session:
            if group_values.external_id is None:
                group = lifecycle.create_group(
                    session,
                    origin,
                    display_name=group_values.display_name,
                    scim_attributes=group_values.extras,
                )
                held = False
            else:
                # A group already held under this externalId (mapped by its Okta id, or
                # created by an Okta event) is this one: adopted, not a second group.
                group, held = lifecycle.adopt_group(
                    session,
                    origin,
                    external_id=group_values.external_id,
                    display_name=group_values.display_name,
                    scim_attributes=group_values.extras,
                )
            if held and (group.scim_attributes or None) != group_values.extras:
                group.scim_attributes = group_values.extras
            # Adopted, the members it holds stay (reconciliation and hooks remove members
            # Okta no longer lists): those posted are added.
            self._set_members(session, origin, group, group_values.members, exactly=not held)
            return self._group_documents(session, [group])[0]

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        model = self._model(resource_type)
        origin = current_origin()
        with self._session(write=True) as session:
            try:
                if self._is_user(resource_type):
                    user = self._user_row(session, resource.id, lock=True)
                    self._check_version(user, expected_version)
                    self._update_user(session, origin, user, resource)
                    return self._user_resources(session, model, [user])[0]
                group = self._group_row(session, resource.id, lock=True)
                self._check_version(group, expected_version)
                self._update_group(session, origin, group, resource)
                return self._group_resources(session, model, [group])[0]
            except StaleDataError:
                raise PreconditionFailedException(
                    detail="the resource changed meanwhile; read it again"
                ) from None

    def _update_user(self, session: Session, origin: Origin, user: User, resource) -> None:
        values = mapping.user_fields(resource)
        fields = values.fields
        if not fields.get("user_name"):
            raise InvalidValueException(detail="a User needs a userName")
        self._check_user_unique(session, fields.get("external_id"), user.id)
        changed = {k: v for k, v in fields.items() if getattr(user, k) != v}
        if (user.scim_attributes or None) != values.extras:
            user.scim_attributes = values.extras
        try:
            lifecycle.update_user(session, origin, user, settings=self.settings, **changed)
        except lifecycle.IdentityError as exc:
            raise UniquenessException(detail=str(exc)) from None
        session.flush()

    def _update_group(self, session: Session, origin: Origin, group: Group, resource) -> None:
        values = mapping.group_fields(resource)
        self._check_group_unique(session, values.external_id, group.id)
        lifecycle.rename_group(session, origin, group, values.display_name)
        if values.external_id != group.external_id:
            lifecycle.set_group_external_id(session, origin, group, values.external_id)
        if (group.scim_attributes or None) != values.extras:
            group.scim_attributes = values.extras
        self._set_members(session, origin, group, values.members)
        session.flush()

    def _set_members(
        self,
        session: Session,
        origin: Origin,
        group: Group,
        member_ids: list[str],
        *,
        exactly: bool = True,
    ) -> None:
        """Make the group's present members exactly ``member_ids`` (or, not ``exactly``, add
        those it lacks); each change is a new version."""
        wanted: dict[uuid.UUID, str] = {}
        for value in member_ids:
            ident = mapping.parse_id(value)
            if ident is None:
                raise InvalidValueException(detail=f"member {value!r} is not a user id")
            wanted[ident] = value
        users = (
            {
                u.id: u
                for u in session.scalars(
                    select(User).where(User.id.in_(list(wanted)), User.deleted_at.is_(None))
                )
            }
            if wanted
            else {}
        )
        missing = [value for ident, value in wanted.items() if ident not in users]
        if missing:
            raise InvalidValueException(detail=f"no user with id {missing[0]!r}")
        current = set(
            session.scalars(
                select(Membership.user_id)
                .join(User, User.id == Membership.user_id)
                .where(
                    Membership.group_id == group.id,
                    Membership.present.is_(True),
                    User.deleted_at.is_(None),
                )
            )
        )
        added = [users[i] for i in wanted if i not in current]
        removed = [i for i in current if i not in wanted] if exactly else []
        for user in added:
            lifecycle.set_membership(
                session, origin, user, group, True, source=MembershipSource.SCIM
            )
        for ident in removed:
            user = session.get(User, ident)
            assert user is not None
            lifecycle.set_membership(
                session, origin, user, group, False, source=MembershipSource.SCIM
            )

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        origin = current_origin()
        with self._session(write=True) as session:
            try:
                if self._is_user(resource_type):
                    user = self._user_row(session, resource_id, lock=True)
                    self._check_version(user, expected_version)
                    lifecycle.delete_user(session, origin, user)
                else:
                    group = self._group_row(session, resource_id, lock=True)
                    self._check_version(group, expected_version)
                    lifecycle.delete_group(session, origin, group, settings=self.settings)
                session.flush()
            except StaleDataError:
                raise PreconditionFailedException(
                    detail="the resource changed meanwhile; read it again"
                ) from None

    # -- uniqueness ----------------------------------------------------------

    @staticmethod
    def _check_user_unique(session: Session, external_id: str | None, own: uuid.UUID | None):
        """externalId is unique among users (the directory holds userName to it)."""
        if lifecycle.external_id_taken(session, external_id, own):
            raise UniquenessException(detail=f"externalId {external_id!r} is already taken")

    @staticmethod
    def _check_group_unique(session: Session, external_id: str | None, own: uuid.UUID | None):
        if external_id is None:
            return
        others = [Group.id != own] if own else []
        if session.scalar(select(Group.id).where(Group.external_id == external_id, *others)):
            raise UniquenessException(detail=f"externalId {external_id!r} is already taken")


# Reads as prepared Core statements: no ORM identity map, and no statement built per request.
_GROUP_BY_ID = Prepared(select(Group.__table__).where(Group.id == bindparam("id")))
_USERS_BY_IDS = select(User.__table__).where(
    User.id.in_(bindparam("ids", expanding=True)), User.deleted_at.is_(None)
)
_GROUPS_BY_IDS = select(Group.__table__).where(Group.id.in_(bindparam("ids", expanding=True)))
# The order of the resource types at the root: Users, then Groups.
_RANKS = {"User": 0, "Group": 1}


def _present_groups(users: ColumnElement[bool]) -> Select:
    """The groups ``users`` are present members of; no columns chosen yet."""
    return (
        select()
        .select_from(Membership.__table__.join(Group.__table__, Group.id == Membership.group_id))
        .where(users, Membership.present.is_(True))
    )


def _live_grants(users: ColumnElement[bool]) -> Select:
    """The live grants of ``users``, with their connectors; no columns chosen yet."""
    return (
        select()
        .select_from(Grant.__table__.join(Connector.__table__, Connector.id == Grant.connector_id))
        .where(users, Grant.revoked_at.is_(None))
    )


def _groups_of(users: ColumnElement[bool]) -> Select:
    return (
        _present_groups(users)
        .add_columns(Membership.user_id, Group.id, Group.display_name)
        .order_by(Group.display_name, Group.id)
    )


def _grants_of(users: ColumnElement[bool]) -> Select:
    return (
        _live_grants(users)
        .add_columns(Grant.user_id, Grant.access_level, Connector.slug, Connector.name)
        .order_by(Connector.slug)
    )


def _members_of(groups: ColumnElement[bool]) -> Select:
    return (
        select(Membership.group_id, User.id)
        .join(User, User.id == Membership.user_id)
        .where(groups, Membership.present.is_(True), User.deleted_at.is_(None))
        .order_by(User.user_name_key)
    )


# Each relation twice: for a page of resources, and for one resource (a read by id, the
# commonest request), which runs on the driver's cursor like the resource's own row.
_IDS = bindparam("ids", expanding=True)
_GROUPS_OF_USERS = _groups_of(Membership.user_id.in_(_IDS))
_GRANTS_OF_USERS = _grants_of(Grant.user_id.in_(_IDS))
_MEMBERS_OF_GROUPS = _members_of(Membership.group_id.in_(_IDS))
_GROUPS_OF_USER = Prepared(_groups_of(Membership.user_id == bindparam("id")))
_GRANTS_OF_USER = Prepared(_grants_of(Grant.user_id == bindparam("id")))
_MEMBERS_OF_GROUP = Prepared(_members_of(Membership.group_id == bindparam("id")))


def _user_with_relations(dialect: str, column: str) -> Prepared:
    """The live user whose ``column`` is ``:key`` (a unique column), with its groups and
    grants aggregated as JSON in the same row.

    A read by id is the commonest request, and a search by ``userName`` the next
    (:meth:`SqlStorage._unique_page`); in one statement each is one round trip instead
    of three (on PostgreSQL, 0.18 -> 0.07 ms of the client's CPU). PostgreSQL
    aggregates in the pages' order; SQLite, whose aggregates keep no order, is sorted
    by :func:`_user_read` (SQLite compares strings by code point, as Python does).
    """
    users = User.__table__
    groups = (
        _present_groups(Membership.user_id == users.c.id)
        .add_columns(
            json_aggregate(
                dialect,
                json_array(dialect, Group.id, Group.display_name),
                Group.display_name,
                Group.id,
            )
        )
        .scalar_subquery()
    )
    grants = (
        _live_grants(Grant.user_id == users.c.id)
        .add_columns(
            json_aggregate(
                dialect,
                json_array(dialect, Grant.access_level, Connector.slug, Connector.name),
                Connector.slug,
            )
        )
        .scalar_subquery()
    )
    return Prepared(
        select(users, groups.label("groups_json"), grants.label("grants_json")).where(
            users.c[column] == bindparam("key"), users.c.deleted_at.is_(None)
        )
    )


_USER_WITH_RELATIONS = {
    (dialect, column): _user_with_relations(dialect, column)
    for dialect in ("sqlite", "postgresql")
    for column in ("id", "user_name_key", "external_id")
}


class _GroupOf(NamedTuple):
    id: uuid.UUID
    display_name: str


class _GrantOf(NamedTuple):
    access_level: str
    slug: str
    name: str


class _UserRead(NamedTuple):
    """A user's row (its columns as attributes), its groups and its grants."""

    row: Any
    groups: list[_GroupOf]
    grants: list[_GrantOf]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


def _user_read(connection: Any, column: str, key: Any) -> _UserRead | None:
    """The live user whose unique ``column`` is ``key``, with its groups and grants, in
    one statement."""
    row = _USER_WITH_RELATIONS[connection.dialect.name, column].first(connection, {"key": key})
    if row is None:
        return None
    groups = sorted(
        (_GroupOf(uuid.UUID(str(i)), name) for i, name in json_rows(row.groups_json)),
        key=lambda g: (g.display_name, g.id.hex),
    )
    grants = sorted((_GrantOf(*g) for g in json_rows(row.grants_json)), key=lambda g: g.slug)
    return _UserRead(row, groups, grants)


def _user_document(user: _UserRead, wants: Any) -> mapping.Document:
    groups = user.groups if wants("groups") else []
    grants = user.grants if wants("entitlements") else []
    return mapping.user_document(user, groups, [(g, g) for g in grants])


def _related(reader: Reader, many: Select, one: Prepared, ids: list[uuid.UUID]) -> Any:
    """The rows of a relation for ``ids``: of one resource on the driver's cursor."""
    if len(ids) == 1:
        return one.all(connection_of(reader), {"id": ids[0]})
    return reader.execute(many, {"ids": ids})


def _wanted(parameters: Any):
    """Whether a response keeps an attribute computed from another table."""
    if parameters is None:
        return lambda _name: True
    attributes = [str(p).lower() for p in (getattr(parameters, "attributes", None) or [])]
    excluded = [str(p).lower() for p in (getattr(parameters, "excluded_attributes", None) or [])]

    def wants(name: str) -> bool:
        name = name.lower()
        if attributes:
            return any(
                a == name
                or a.startswith(name + ".")
                or a.endswith(":" + name)
                or (":" in a and a.rsplit(":", 1)[1].split(".")[0] == name)
                for a in attributes
            )
        return name not in excluded

    return wants


def _index_page(session: Any, query: Any, search_request: SearchRequest[Any]) -> list[Any]:
    """An index page's rows: ``startIndex`` and ``count`` of RFC 7644 section 3.4.2.4."""
    start = search_request.start_index_0 or 0
    if start:
        query = query.offset(start)
    if search_request.count is not None:
        query = query.limit(search_request.count)
    return list(session.execute(query))


def _fetch_page(session: Any, query: Any, count: int | None, backwards: bool):
    """A cursor page's rows in page order, and whether more lie beyond it (one extra row
    is asked for). ``query`` walks away from the cursor: backwards for a previous page."""
    if count is not None:
        query = query.limit(count + 1)
    rows = list(session.execute(query))
    more = count is not None and len(rows) > count
    rows = rows[:count] if count is not None else rows
    if backwards:
        rows.reverse()
    return rows, more


def _ordered(terms: list[Any], descending: bool) -> list[Any]:
    return [t.desc() for t in terms] if descending else terms


def _lexically(first, first_value, second, second_value, *, after: bool) -> ColumnElement[bool]:
    """(first, second) after (or before) (first_value, second_value), lexicographically."""
    if after:
        return or_(first > first_value, and_(first == first_value, second > second_value))
    return or_(first < first_value, and_(first == first_value, second < second_value))


def _position(direction: str, row: Any, sorted_: bool) -> dict[str, Any]:
    """Where a cursor page starts after (or ends before): the row's sort value and id."""
    ident = str(row.id)
    if not sorted_:
        return {"d": direction, "i": ident}
    value = row.sort_key
    if isinstance(value, dt.datetime):
        value = {"t": value.isoformat()}
    elif isinstance(value, uuid.UUID):
        value = {"u": str(value)}
    return {"d": direction, "m": value is None, "k": value, "i": ident}


def _read_position(position: Any, sorted_: bool) -> tuple[str, tuple[bool, Any, uuid.UUID]]:
    try:
        direction = position["d"]
        ident = uuid.UUID(position["i"])
        missing = bool(position.get("m", False))
        value = position.get("k")
    except (TypeError, KeyError, ValueError, AttributeError):
        raise InvalidCursorException from None
    if direction not in ("next", "previous") or ("m" in position) != sorted_:
        raise InvalidCursorException
    if isinstance(value, dict):
        try:
            value = uuid.UUID(value["u"]) if "u" in value else dt.datetime.fromisoformat(value["t"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidCursorException from None
    return direction, (missing, value, ident)
