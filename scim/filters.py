"""SCIM filters and sort orders compiled to SQL over the identity tables (SQLite and PostgreSQL).

Modelled attributes (userName, externalId, displayName, name.givenName, active,
meta.created, the enterprise employeeNumber, members...) are compared on their
columns: a case-insensitive one on its folded key column (``provisioning.text.fold``,
computed in Python when the value is written), the operand folded alike; attributes
kept in the ``scim_attributes`` JSON document are compared with the database's JSON
functions, and multi-valued ones (emails, phoneNumbers...) with ``EXISTS`` over
their elements. The semantics follow ``ScimFilter.match`` under the service's
comparison key (:func:`scim.resources.comparison_key`): strings compare folded unless
the attribute is caseExact, a missing value equals only ``null``, ``ne`` on a
multi-valued attribute means no value equals, and every predicate is true or false,
never SQL NULL, so ``not`` is exact.

Filters are bounded (:func:`check_size`): at most :data:`MAX_TERMS` comparisons and
:data:`MAX_DEPTH` levels of nesting; operands are range-checked (a dateTime must be a
date the database holds), and a refusal is ``invalidFilter``, never a database error.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from scim2_models import (
    BaseModel,
    InvalidFilterException,
    InvalidPathException,
    Reference,
)
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)
from scim2_models.path.resolution import AttributeBinding, _resolve_filter_path
from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from provisioning import text
from provisioning.connectors.models import Connector
from provisioning.entitlements.models import Grant
from provisioning.identity.models import Group, Membership, User
from scim.resources import ENTERPRISE

MAX_TERMS = 100
"""The most comparisons and presence tests one filter may hold (``invalidFilter`` beyond)."""
MAX_DEPTH = 10
"""The deepest a filter may nest (``and``/``or``/``not``, parentheses, value paths)."""


def check_size(node: Any) -> None:
    """Refuse (``invalidFilter``) a filter beyond :data:`MAX_TERMS` or :data:`MAX_DEPTH`."""
    terms = 0
    stack = [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidFilterException(
                detail=f"the filter nests more than {MAX_DEPTH} levels deep"
            )
        if isinstance(node, LogicalExpr):
            stack.extend((term, depth + 1) for term in node.terms)
        elif isinstance(node, Not):
            stack.append((node.expr, depth + 1))
        elif isinstance(node, ValuePath):
            stack.append((node.val_filter, depth + 1))
        else:
            terms += 1
            if terms > MAX_TERMS:
                raise InvalidFilterException(
                    detail=f"the filter holds more than {MAX_TERMS} comparisons"
                )


def _after_prefix(prefix: str) -> str | None:
    """The least string after every string starting with ``prefix``, in code point
    order; None when there is none (a prefix of U+10FFFF only)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


@dataclass(frozen=True)
class Scalar:
    """One value per resource: a column, or a value in the JSON document."""

    expr: ColumnElement[Any]
    kind: type  # str, bool, dt.datetime, uuid.UUID
    case_exact: bool = False
    folded: bool = False  # the expression is a folded key column (provisioning.text.fold)
    json: bool = False  # a value read from a JSON document (booleans are 1/0 or 'true')


class Json:
    """The JSON functions of one dialect, over a JSON(B) column or element."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def text(self, doc: ColumnElement[Any], keys: list[str]) -> ColumnElement[Any]:
        """The value at ``keys`` as SQL text (booleans as 'true'/'false'), NULL when missing."""
        if self.dialect == "postgresql":
            return doc.op("#>>", return_type=Text)(_pg_path(keys))
        return func.json_extract(doc, _sqlite_path(keys))

    def boolean(self, doc: ColumnElement[Any], keys: list[str]) -> ColumnElement[Any]:
        """The value at ``keys`` compared as a boolean: 1/0 (SQLite) or 'true'/'false' text."""
        return self.text(doc, keys)

    def is_null(self, doc: ColumnElement[Any], keys: list[str]) -> ColumnElement[bool]:
        """The value at ``keys`` is a JSON null (not missing)."""
        if self.dialect == "postgresql":
            return func.coalesce(
                func.jsonb_typeof(doc.op("#>", return_type=JSONB)(_pg_path(keys))) == "null",
                False,
            )
        return func.coalesce(func.json_type(doc, _sqlite_path(keys)) == "null", False)

    def bool_literal(self, value: bool) -> Any:
        if self.dialect == "postgresql":
            return "true" if value else "false"
        return 1 if value else 0

    def elements(self, doc: ColumnElement[Any], keys: list[str], *, ordinal: bool = False):
        """A table of the elements of the array at ``keys`` (column ``value``; with
        ``ordinal``, their position: ``ordinality`` on PostgreSQL, ``key`` on SQLite)."""
        if self.dialect == "postgresql":
            array = doc.op("#>", return_type=JSONB)(_pg_path(keys))
            fn = func.jsonb_array_elements(_pg_array(array))
            if ordinal:
                return fn.table_valued("value", with_ordinality="ordinality").alias()
            return fn.table_valued("value").alias()
        return func.json_each(doc, _sqlite_path(keys)).table_valued("value", "key").alias()

    def element_text(self, element, sub: str | None) -> ColumnElement[Any]:
        """An element's sub-attribute (or the element itself) as text."""
        if self.dialect == "postgresql":
            if sub is None:
                return element.c.value.op("#>>", return_type=Text)(_pg_path([]))
            return element.c.value.op("->>", return_type=Text)(literal(sub, Text))
        if sub is None:
            return element.c.value
        return func.json_extract(element.c.value, _sqlite_path([sub]))


def _pg_array(array: ColumnElement[Any]) -> ColumnElement[Any]:
    """The JSON value as an array: an array itself, else an empty array."""
    empty = literal_column("'[]'::jsonb", JSONB)
    return case((func.jsonb_typeof(array) == "array", array), else_=empty)


def _pg_path(keys: list[str]) -> ColumnElement[Any]:
    return literal(keys, ARRAY(Text))


def _sqlite_path(keys: list[str]) -> str:
    return "$" + "".join('."' + k.replace('"', '\\"') + '"' for k in keys)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _name(model: type[BaseModel], field_name: str) -> str:
    return model._scim_name(field_name)


def _kind(binding: AttributeBinding) -> type:
    target = binding.target_type
    if target is bool:
        return bool
    if target is dt.datetime:
        return dt.datetime
    if target in (int, float):
        return float
    return str


class Compiler:
    """Compiles the filters and sort orders of one resource type (User or Group) to SQL."""

    def __init__(
        self, model: type[BaseModel], table: type, dialect: str, *, codepoint_order: bool = True
    ) -> None:
        self.model = model
        self.table = table
        self.json = Json(dialect)
        self.dialect = dialect
        # Strings order by code point already (SQLite; PostgreSQL with a C collation), or must
        # be compared COLLATE "C" -- which the default-collation indexes cannot serve.
        self.collation = None if codepoint_order or dialect != "postgresql" else "C"

    # -- where an attribute lives ------------------------------------------

    def _extension_key(self, binding: AttributeBinding) -> list[str]:
        schema = getattr(binding.model, "__schema__", None)
        if binding.model is not self.model and schema:
            return [str(schema)]
        return []

    def _column(self, binding: AttributeBinding) -> Scalar | None:
        """The column holding a single-valued attribute, if the service models it."""
        head = _name(binding.model, binding.field_name)
        sub = (
            _name(binding.field_type, binding.sub_field_name)  # type: ignore[arg-type]
            if binding.sub_field_name
            else None
        )
        ext = self._extension_key(binding)
        t = self.table
        key = (ext[0] if ext else "", head, sub)
        if key == ("", "meta", "created"):
            return Scalar(t.created_at, dt.datetime)
        if key == ("", "meta", "lastModified"):
            return Scalar(t.updated_at, dt.datetime)
        if key == ("", "id", None):
            return Scalar(t.id, uuid.UUID, case_exact=True)
        if key == ("", "externalId", None):
            return Scalar(t.external_id, str, case_exact=True)
        if key == ("", "displayName", None):
            return Scalar(t.display_name_key, str, folded=True)
        if t is User:
            if key == ("", "active", None):  # an expression, built only when asked for
                return Scalar(self._active(), bool)
            columns = {
                ("", "userName", None): Scalar(User.user_name_key, str, folded=True),
                ("", "name", "givenName"): Scalar(User.given_name_key, str, folded=True),
                ("", "name", "familyName"): Scalar(User.family_name_key, str, folded=True),
                (ENTERPRISE, "employeeNumber", None): Scalar(
                    User.employee_number_key, str, folded=True
                ),
                (ENTERPRISE, "department", None): Scalar(User.department_key, str, folded=True),
                (ENTERPRISE, "manager", "value"): Scalar(User.manager_id, str, case_exact=True),
            }
            if key in columns:
                return columns[key]
        if head == "meta":
            raise InvalidFilterException(detail=f"meta.{sub} cannot be filtered on")
        return None

    def _active(self) -> ColumnElement[Any]:
        """``active`` as the resource shows it: missing when the client left it out."""
        unset = self.json.is_null(User.scim_attributes, ["active"])
        return case((User.active.is_(False), False), (unset, None), else_=User.active)

    def _json_scalar(self, binding: AttributeBinding) -> Scalar:
        keys = [*self._extension_key(binding), _name(binding.model, binding.field_name)]
        if binding.sub_field_name:
            keys.append(_name(binding.field_type, binding.sub_field_name))  # type: ignore[arg-type]
        kind = _kind(binding)
        doc = self.table.scim_attributes
        if kind is bool:
            return Scalar(self.json.boolean(doc, keys), bool, json=True)
        return Scalar(self.json.text(doc, keys), str, case_exact=binding.case_exact)

    # -- filters -----------------------------------------------------------

    def where(self, node: Any) -> ColumnElement[bool]:
        """The SQL condition of a filter's syntax tree."""
        if isinstance(node, LogicalExpr):
            terms = [self.where(term) for term in node.terms]
            return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)
        if isinstance(node, Not):
            return not_(self.where(node.expr))
        if isinstance(node, Comparison):
            return self._comparison(node)
        if isinstance(node, Present):
            return self._present(node.attr_path)
        if isinstance(node, ValuePath):
            return self._value_path(node)
        raise InvalidFilterException(detail=f"unsupported filter expression {node}")

    def unique(self, node: Any) -> tuple[str, str] | None:
        """(column name, value) when ``node`` is an ``eq`` on an attribute whose column is
        unique among live users (``userName``, case-insensitively, and ``externalId``),
        the value as :func:`compare` would compare it; None for any other filter.

        Such a filter finds one user or none, which an index answers without the general
        path (counting, then paging): the lookup Okta makes before every create.
        """
        if self.table is not User or not isinstance(node, Comparison):
            return None
        if node.op != CompareOperator.eq or not isinstance(node.value, str):
            return None
        binding = self._resolve(node.attr_path, for_comparison=True)
        if binding is None or binding.is_multivalued or self._relation(binding) is not None:
            return None
        scalar = self._column(binding)
        if scalar is None or not any(
            scalar.expr is c for c in (User.user_name_key, User.external_id)
        ):
            return None
        return scalar.expr.key, node.value if scalar.case_exact else text.fold(node.value)

    def _resolve(self, attr_path: AttrPath, *, for_comparison: bool) -> AttributeBinding | None:
        return _resolve_filter_path(
            self.model, attr_path, strict=False, for_comparison=for_comparison
        )

    def _comparison(self, node: Comparison) -> ColumnElement[bool]:
        binding = self._resolve(node.attr_path, for_comparison=True)
        if binding is None:
            return false()
        relation = self._relation(binding)
        if relation is not None:
            return relation(
                lambda s: compare(s, node.op, node.value, self.dialect, self.collation), node.op
            )
        if binding.is_multivalued:
            return self._json_any(
                binding,
                lambda s: compare(s, node.op, node.value, self.dialect, self.collation),
                negate=node.op == CompareOperator.ne,
            )
        return compare(self._scalar(binding), node.op, node.value, self.dialect, self.collation)

    def _scalar(self, binding: AttributeBinding) -> Scalar:
        column = self._column(binding)
        return column if column is not None else self._json_scalar(binding)

    def _present(self, attr_path: AttrPath) -> ColumnElement[bool]:
        binding = self._resolve(attr_path, for_comparison=False)
        if binding is None:
            return false()
        relation = self._relation(binding)
        if relation is not None:
            return relation(lambda s: present(s), CompareOperator.eq)
        if binding.is_multivalued:
            if binding.sub_field_name is None:
                return self._json_any(binding, lambda s: true(), negate=False)
            return self._json_any(binding, present, negate=False)
        if binding.sub_field_name is None and _is_complex(binding.field_type):
            # A complex attribute is present when any of its sub-attributes is.
            conditions = [present(self._json_object(binding))]
            if self.table is User and _name(binding.model, binding.field_name) == "name":
                conditions += [present(Scalar(User.given_name, str))]
                conditions += [present(Scalar(User.family_name, str))]
            if _name(binding.model, binding.field_name) == "manager" and self.table is User:
                conditions += [present(Scalar(User.manager_id, str))]
            return or_(*conditions)
        return present(self._scalar(binding))

    def _json_object(self, binding: AttributeBinding) -> Scalar:
        keys = [*self._extension_key(binding), _name(binding.model, binding.field_name)]
        return Scalar(self.json.text(self.table.scim_attributes, keys), str)

    def _json_any(
        self, binding: AttributeBinding, predicate, *, negate: bool
    ) -> ColumnElement[bool]:
        """Some element of a JSON array satisfies ``predicate`` (none, for ``ne``)."""
        keys = [*self._extension_key(binding), _name(binding.model, binding.field_name)]
        element = self.json.elements(self.table.scim_attributes, keys)
        sub = (
            _name(binding.field_type, binding.sub_field_name)  # type: ignore[arg-type]
            if binding.sub_field_name
            else None
        )
        scalar = self._element_scalar(element, sub, binding)
        if negate:
            # "ne" on a multi-valued attribute: no value equals the operand.
            return not_(
                exists(select(literal(1)).select_from(element).where(_equal_of(predicate, scalar)))
            )
        return exists(select(literal(1)).select_from(element).where(predicate(scalar)))

    def _element_scalar(self, element, sub: str | None, binding: AttributeBinding) -> Scalar:
        kind = _kind(binding)
        text = self.json.element_text(element, sub)
        return Scalar(text, bool if kind is bool else str, case_exact=binding.case_exact, json=True)

    def _value_path(self, node: ValuePath) -> ColumnElement[bool]:
        binding = self._resolve(node.attr_path, for_comparison=False)
        if binding is None:
            return false()
        if not binding.is_multivalued:
            raise InvalidFilterException(detail=f"{node.attr_path} is not multi-valued")
        item_model = binding.field_type
        if self._relation(binding) is not None:
            return self._relation_value_path(binding, node.val_filter)
        keys = [*self._extension_key(binding), _name(binding.model, binding.field_name)]
        element = self.json.elements(self.table.scim_attributes, keys)
        inner = _ElementCompiler(self, element, item_model)
        return exists(select(literal(1)).select_from(element).where(inner.where(node.val_filter)))

    # -- relations: Group.members, User.groups, User.entitlements -------------

    def _relation(self, binding: AttributeBinding):
        """For an attribute held in another table, a builder of EXISTS conditions."""
        if binding.model is not self.model:
            return None
        head = _name(binding.model, binding.field_name)
        sub = (
            _name(binding.field_type, binding.sub_field_name)  # type: ignore[arg-type]
            if binding.sub_field_name
            else "value"
        )
        source = self._relation_source(head)
        if source is None:
            return None
        query, columns = source
        if sub not in columns:
            raise InvalidFilterException(detail=f"{head}.{sub} cannot be filtered on")
        scalar = columns[sub]

        def build(predicate, op):
            if op == CompareOperator.ne:
                return not_(exists(query.where(_equal_of(predicate, scalar))))
            return exists(query.where(predicate(scalar)))

        return build

    def _relation_source(self, head: str):
        if self.table is Group and head == "members":
            query = (
                select(literal(1))
                .select_from(Membership)
                .join(User, User.id == Membership.user_id)
                .where(
                    Membership.group_id == Group.id,
                    Membership.present.is_(True),
                    User.deleted_at.is_(None),
                )
            )
            return query, {
                "value": Scalar(Membership.user_id, uuid.UUID, case_exact=True),
                "type": Scalar(literal("User"), str),
            }
        if self.table is User and head == "groups":
            query = (
                select(literal(1))
                .select_from(Membership)
                .join(Group, Group.id == Membership.group_id)
                .where(Membership.user_id == User.id, Membership.present.is_(True))
            )
            return query, {
                "value": Scalar(Membership.group_id, uuid.UUID, case_exact=True),
                "display": Scalar(Group.display_name_key, str, folded=True),
                "type": Scalar(literal("direct"), str),
            }
        if self.table is User and head == "entitlements":
            query = (
                select(literal(1))
                .select_from(Grant)
                .join(Connector, Connector.id == Grant.connector_id)
                .where(Grant.user_id == User.id, Grant.revoked_at.is_(None))
            )
            return query, {
                "value": Scalar(Connector.slug, str),
                "display": Scalar(Connector.name, str),
                "type": Scalar(cast(Grant.access_level, String), str),
            }
        return None

    def _relation_value_path(self, binding: AttributeBinding, val_filter: Any):
        head = _name(binding.model, binding.field_name)
        query, columns = self._relation_source(head)  # type: ignore[misc]
        inner = _RelationCompiler(columns, self.dialect, self.collation)
        return exists(query.where(inner.where(val_filter)))

    # -- sorting -------------------------------------------------------------

    def sort_key(self, binding: AttributeBinding | None) -> ColumnElement[Any] | None:
        """The value resources are ordered by (as compared: folded unless caseExact)."""
        if binding is None:
            return None
        if self._relation(binding) is not None:
            raise InvalidPathException(
                detail="sorting by members, groups or entitlements is not supported"
            )
        scalar = self._primary(binding) if binding.is_multivalued else self._scalar(binding)
        expr = scalar.expr
        if scalar.kind is str and not scalar.case_exact and not scalar.folded:
            expr = text.fold_sql(expr, self.dialect)
        if scalar.kind is str and self.collation:
            expr = expr.collate(self.collation)
        return expr

    def _primary(self, binding: AttributeBinding) -> Scalar:
        """A multi-valued attribute sorts by its primary value, or else its first one."""
        keys = [*self._extension_key(binding), _name(binding.model, binding.field_name)]
        element = self.json.elements(self.table.scim_attributes, keys, ordinal=True)
        sub = (
            _name(binding.field_type, binding.sub_field_name)  # type: ignore[arg-type]
            if binding.sub_field_name
            else None
        )
        primary = self.json.element_text(element, "primary")
        is_primary = primary == self.json.bool_literal(True)
        position = element.c.ordinality if self.dialect == "postgresql" else element.c.key
        value = (
            select(self.json.element_text(element, sub))
            .select_from(element)
            .order_by(func.coalesce(is_primary, False).desc(), position)
            .limit(1)
            .scalar_subquery()
        )
        kind = _kind(binding)
        return Scalar(
            value, bool if kind is bool else str, case_exact=binding.case_exact, json=True
        )

    def order_by(self, key: ColumnElement[Any] | None, descending: bool) -> list[Any]:
        """ORDER BY terms: missing values last ascending (first descending), then the id.

        The order is total, so index pages and cursor pages are stable.
        """
        terms: list[Any] = []
        if key is not None:
            terms += [key.is_(None), key]
        terms.append(self.table.id)
        return [t.desc() for t in terms] if descending else terms

    def beyond(
        self,
        key: ColumnElement[Any] | None,
        anchor: tuple[bool, Any, uuid.UUID],
        *,
        after: bool,
    ) -> ColumnElement[bool]:
        """Rows after (or before) ``anchor`` = (missing, value, id) in the ascending order."""
        missing, value, ident = anchor
        ids = self.table.id > ident if after else self.table.id < ident
        return keyset(key, missing, value, ids, after=after)


def keyset(
    key: ColumnElement[Any] | None,
    missing: bool,
    value: Any,
    ties: ColumnElement[bool],
    *,
    after: bool,
) -> ColumnElement[bool]:
    """Rows after (or before) an anchor in the ascending order of ``key`` (missing values
    last); ``ties`` picks, among the rows with the anchor's value, those after (or before)
    it in the order of the tie-breakers."""
    if key is None:
        return ties
    absent = key.is_(None)
    if missing:
        return and_(absent, ties) if after else or_(~absent, and_(absent, ties))
    value = literal(value, key.type)  # a bound value, even True or False
    beyond_value = key > value if after else key < value
    same = and_(~absent, key == value, ties)
    if after:
        return or_(absent, and_(~absent, beyond_value), same)
    return or_(and_(~absent, beyond_value), same)


def _is_complex(field_type: Any) -> bool:
    return isinstance(field_type, type) and issubclass(field_type, BaseModel)


def _equal_of(predicate, scalar: Scalar) -> ColumnElement[bool]:
    """The "eq" form of a "ne" predicate, for NOT EXISTS over several values."""
    return not_(predicate(scalar))


class _ElementCompiler:
    """Compiles the inner filter of a value path against one JSON array element."""

    def __init__(self, outer: Compiler, element, item_model: Any) -> None:
        self.outer = outer
        self.element = element
        self.item_model = item_model

    def _scalar(self, attr_path: AttrPath) -> Scalar | None:
        if attr_path.sub_attr is not None or attr_path.uri is not None:
            raise InvalidFilterException(detail=f"{attr_path} cannot appear in a value filter")
        if not _is_complex(self.item_model):
            if attr_path.attr.lower() != "value":
                return None
            return Scalar(self.outer.json.element_text(self.element, None), str)
        binding = _resolve_filter_path(self.item_model, attr_path, strict=False)
        if binding is None:
            return None
        kind = _kind(binding)
        text = self.outer.json.element_text(
            self.element, _name(self.item_model, binding.field_name)
        )
        return Scalar(text, bool if kind is bool else str, case_exact=binding.case_exact, json=True)

    def where(self, node: Any) -> ColumnElement[bool]:
        if isinstance(node, LogicalExpr):
            terms = [self.where(term) for term in node.terms]
            return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)
        if isinstance(node, Not):
            return not_(self.where(node.expr))
        if isinstance(node, Comparison):
            scalar = self._scalar(node.attr_path)
            if scalar is None:
                return false()
            return compare(scalar, node.op, node.value, self.outer.dialect, self.outer.collation)
        if isinstance(node, Present):
            scalar = self._scalar(node.attr_path)
            return false() if scalar is None else present(scalar)
        raise InvalidFilterException(detail="value filters cannot be nested")


class _RelationCompiler:
    """Compiles the inner filter of a value path over members, groups or entitlements."""

    def __init__(self, columns: dict[str, Scalar], dialect: str, collation: str | None) -> None:
        self.columns = {k.lower(): v for k, v in columns.items()}
        self.dialect = dialect
        self.collation = collation

    def where(self, node: Any) -> ColumnElement[bool]:
        if isinstance(node, LogicalExpr):
            terms = [self.where(term) for term in node.terms]
            return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)
        if isinstance(node, Not):
            return not_(self.where(node.expr))
        if isinstance(node, Comparison | Present):
            scalar = self.columns.get(node.attr_path.attr.lower())
            if scalar is None:
                return false()
            if isinstance(node, Present):
                return present(scalar)
            return compare(scalar, node.op, node.value, self.dialect, self.collation)
        raise InvalidFilterException(detail="value filters cannot be nested")


# -- comparisons -------------------------------------------------------------


def present(scalar: Scalar) -> ColumnElement[bool]:
    """``pr``: a value that is not null and, for a string, not empty."""
    expr = scalar.expr
    if scalar.kind is str:
        return and_(expr.is_not(None), expr != "")
    return expr.is_not(None)


def _coerce(scalar: Scalar, value: Any, op: CompareOperator) -> Any:
    if scalar.kind is dt.datetime:
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        if not isinstance(value, str):
            raise InvalidFilterException(detail=f"{value!r} is not a dateTime")
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            # The instant in UTC must be a date too (9999-12-31T23:00-05:00 is not).
            return parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise InvalidFilterException(
                detail=f"{value!r} is not a dateTime the service can compare"
            ) from None
    if scalar.kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    return value


def compare(
    scalar: Scalar, op: CompareOperator, value: Any, dialect: str, collation: str | None = None
) -> ColumnElement[bool]:
    """One comparison, true or false for every row (never NULL)."""
    expr = scalar.expr
    if value is None:
        if op == CompareOperator.eq:
            return expr.is_(None)
        if op == CompareOperator.ne:
            return expr.is_not(None)
        return false()
    if scalar.kind is uuid.UUID:
        return _compare_id(expr, op, value)
    if op in (CompareOperator.co, CompareOperator.sw, CompareOperator.ew):
        if scalar.kind is not str or not isinstance(value, str):
            return false()
        return and_(expr.is_not(None), _substring(scalar, op, value, dialect, collation))
    value = _coerce(scalar, value, op)
    if scalar.kind is bool:
        if not isinstance(value, bool):
            return false() if op != CompareOperator.ne else true()
        if op not in (CompareOperator.eq, CompareOperator.ne):
            raise InvalidFilterException(detail=f"{op.value} cannot compare booleans")
        operand = Json(dialect).bool_literal(value) if scalar.json else value
        if op == CompareOperator.eq:
            return and_(expr.is_not(None), expr == operand)
        return or_(expr.is_(None), expr != operand)
    if scalar.kind is str:
        if not isinstance(value, str):
            value = str(value) if not isinstance(value, bool) else ("true" if value else "false")
        if not scalar.case_exact:
            value = text.fold(value)
            if not scalar.folded:
                expr = text.fold_sql(expr, dialect)
    if scalar.kind is str and collation and op not in (CompareOperator.eq, CompareOperator.ne):
        expr = expr.collate(collation)  # equality needs no collation: indexes stay usable
    ops = {
        CompareOperator.eq: expr == value,
        CompareOperator.gt: expr > value,
        CompareOperator.ge: expr >= value,
        CompareOperator.lt: expr < value,
        CompareOperator.le: expr <= value,
    }
    if op == CompareOperator.ne:
        return or_(scalar.expr.is_(None), expr != value)
    return and_(scalar.expr.is_not(None), ops[op])


def _compare_id(expr: ColumnElement[Any], op: CompareOperator, value: Any) -> ColumnElement[bool]:
    try:
        ident = uuid.UUID(str(value))
    except ValueError:
        ident = None
    if op == CompareOperator.eq:
        return expr == ident if ident is not None else false()
    if op == CompareOperator.ne:
        return expr != ident if ident is not None else true()
    raise InvalidFilterException(detail=f"id can only be compared with eq and ne, not {op.value}")


def _substring(
    scalar: Scalar, op: CompareOperator, value: str, dialect: str, collation: str | None
) -> ColumnElement[bool]:
    expr = scalar.expr
    if not scalar.case_exact:
        value = text.fold(value)
        if not scalar.folded:
            expr = text.fold_sql(expr, dialect)
    pattern = _escape_like(value)
    if op == CompareOperator.co:
        pattern = f"%{pattern}%"
    elif op == CompareOperator.sw:
        pattern = f"{pattern}%"
    else:
        pattern = f"%{pattern}"
    condition = expr.like(pattern, escape="\\")
    if op == CompareOperator.sw and value:
        # A range the index can serve, before the exact LIKE.
        ranged = expr.collate(collation) if collation else expr
        beyond = _after_prefix(value)
        bounds = [ranged >= value] + ([ranged < beyond] if beyond is not None else [])
        condition = and_(*bounds, condition)
    if scalar.case_exact and dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case: check the case exactly as well.
        if op == CompareOperator.co:
            condition = and_(condition, func.instr(expr, value) > 0)
        elif op == CompareOperator.sw:
            condition = and_(condition, func.substr(expr, 1, len(value)) == value)
        else:
            condition = and_(condition, func.substr(expr, -len(value)) == value)
    return condition


__all__ = ["Compiler", "Reference", "Scalar", "keyset"]
