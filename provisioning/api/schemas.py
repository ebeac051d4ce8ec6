"""The pydantic models that validate /api/v1 requests and describe its answers (and its OpenAPI)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from provisioning import text
from provisioning.connectors.models import (
    AccessLevel,
    ActionKind,
    ConnectorKind,
    DataClassification,
    Interface,
    Policy,
    Publisher,
    ReviewStatus,
)
from provisioning.delivery.models import MessageState, TargetKind
from provisioning.entitlements.exceptions import ExceptionState
from provisioning.entitlements.policy import Decision
from provisioning.oversight.models import FindingKind, FindingState, Severity
from provisioning.requests.models import Approver, RequestDecision, RequestState
from provisioning.reviews.models import (
    CampaignState,
    CampaignTrigger,
    ItemOutcome,
    NoResponse,
    ReviewDecision,
    ReviewerRole,
)

INT32 = 2**31 - 1
INT64 = 2**63 - 1


def _check(value: Any) -> Any:
    if isinstance(value, str) and (why := text.problem(value)) is not None:
        raise ValueError(f"{why}: text may hold no control character but TAB, LF, CR")
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
    if isinstance(value, list):
        for item in value:
            _check(item)
    if isinstance(value, dict):
        for key, item in value.items():
            _check(key)
            _check(item)
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def Absent(**constraints: Any) -> Any:
    """A patch field that may be left out but never sent as null: None stands for
    absent in the model, and the schema gives no default (null is no value of its type)."""
    return Field(None, json_schema_extra=_no_default, **constraints)


class Input(BaseModel):
    """A request part: unknown fields are refused, text keeps the character rule
    (:mod:`provisioning.text`)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _check(value)


Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$", examples=["github"])]
ActionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Short = Annotated[str, Field(min_length=1, max_length=255)]
# A connector's MCP server identity (RFC 9728 resource URI) and its AuthZEN resource type.
ResourceUri = Annotated[
    str,
    Field(
        pattern=r"^https?://[!-~]{1,480}$",
        max_length=500,
        examples=["https://mcp.github.example/mcp"],
        description="its MCP server's RFC 9728 resource URI (the audience of its tokens)",
    ),
]
# Where a connector's MCP server answers (streamable HTTP); checked against the egress policy.
McpUrl = Annotated[
    str,
    Field(
        pattern=r"^https?://[!-~]{1,480}$",
        max_length=500,
        examples=["https://mcp.github.example/mcp"],
        description="its MCP server's streamable HTTP endpoint (tools are listed from it)",
    ),
]
ResourceType = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,99}$",
        examples=["record"],
        description="the AuthZEN resource type it answers to besides `connector`",
    ),
]
Limit = Annotated[int, Field(ge=1, le=500, description="page size")]
Cursor = Annotated[str, Field(max_length=500, description="next_cursor of the previous page")]


# -- problems ----------------------------------------------------------------


class InvalidField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[InvalidField] | None = None


# -- connectors and actions ----------------------------------------------------


class ConnectorIn(Input):
    slug: Slug
    name: Name
    kind: ConnectorKind
    capability: AccessLevel
    publisher: Publisher
    interfaces: list[Interface] = Field(min_length=1, max_length=4)
    security_review: ReviewStatus = ReviewStatus.PENDING
    data_classification: DataClassification = DataClassification.INTERNAL
    compliance_assessment: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    owner: Short | None = None
    reassess_by: dt.date | None = None
    # Days unused before a grant is dormant (null: PROVISIONING_DORMANT_AFTER_DAYS).
    dormant_after_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    # Revoke dormant grants this many days after their finding opens (null: never).
    dormant_grace_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    resource_uri: ResourceUri | None = None
    resource_type: ResourceType | None = None
    mcp_url: McpUrl | None = None
    enabled: bool = False


class ConnectorPatch(Input):
    """Fields to change; absent fields are kept. Enabling goes through /enable."""

    name: Name = Absent()
    kind: ConnectorKind = Absent()
    capability: AccessLevel = Absent()
    publisher: Publisher = Absent()
    interfaces: list[Interface] = Absent(min_length=1, max_length=4)
    security_review: ReviewStatus = Absent()
    data_classification: DataClassification = Absent()
    compliance_assessment: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    owner: Short | None = None
    reassess_by: dt.date | None = None
    # Days unused before a grant is dormant (null: PROVISIONING_DORMANT_AFTER_DAYS).
    dormant_after_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    # Revoke dormant grants this many days after their finding opens (null: never).
    dormant_grace_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    unknown_action_policy: Policy = Absent()
    resource_uri: ResourceUri | None = None
    resource_type: ResourceType | None = None
    mcp_url: McpUrl | None = None


class ConnectorOut(BaseModel):
    id: int
    slug: str
    name: str
    kind: ConnectorKind
    capability: AccessLevel
    publisher: Publisher
    interfaces: list[Interface]
    security_review: ReviewStatus
    data_classification: DataClassification
    compliance_assessment: str | None
    owner: str | None
    reassess_by: dt.date | None
    dormant_after_days: int | None
    dormant_grace_days: int | None
    enabled: bool
    unknown_action_policy: Policy
    resource_uri: str | None
    resource_type: str | None
    mcp_url: str | None
    governance_problems: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class ConnectorPage(BaseModel):
    items: list[ConnectorOut]
    next_cursor: str | None


class ConnectorQuery(Input):
    enabled: bool | None = None
    kind: ConnectorKind | None = None
    publisher: Publisher | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class ConnectorPath(Input):
    slug: Annotated[str, Field(max_length=100)]


class ActionIn(Input):
    name: ActionName
    kind: ActionKind
    org_policy: Policy = Policy.NEEDS_APPROVAL
    description: Annotated[str, Field(max_length=2000)] | None = None


class ActionPatch(Input):
    kind: ActionKind = Absent()
    org_policy: Policy = Absent()
    # With needs_approval: each call is approved by the connector's request-policy chain
    # (owner and/or manager), not only confirmed by the caller (docs/requests.md).
    requires_approver: bool = Absent()
    description: Annotated[str, Field(max_length=2000)] | None = None


class ActionOut(BaseModel):
    name: str
    kind: ActionKind
    org_policy: Policy
    requires_approver: bool = False
    description: str | None
    # What the connector's MCP server last said of the tool (hints, untrusted), and when
    # it was last found missing from the server (null: offered at the last sync).
    annotations: dict[str, Any] | None = None
    vanished_at: dt.datetime | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class ToolSyncIn(Input):
    """List the connector's MCP server's tools; ``apply`` writes the diff whose ``digest``
    the admin saw (without a digest: the diff as listed now)."""

    apply: bool = False
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class ToolChange(BaseModel):
    change: str
    name: str
    kind: ActionKind
    org_policy: Policy
    description: str | None
    annotations: dict[str, Any] | None
    open_world: bool | None
    before: dict[str, Any] | None = None


class ToolSyncOut(BaseModel):
    connector: str
    applied: bool
    added: list[ToolChange]
    changed: list[ToolChange]
    vanished: list[ToolChange]
    unchanged: int
    digest: str


class ActionList(BaseModel):
    items: list[ActionOut]


class ActionPath(Input):
    slug: Annotated[str, Field(max_length=100)]
    name: Annotated[str, Field(max_length=200)]


# -- mappings ------------------------------------------------------------------


class DryRun(Input):
    dry_run: bool = Field(False, description="return who would gain or lose what; change nothing")


class ConfirmViolations(Input):
    """A mapping change's knowing yes to the separation-of-duties violations it begins."""

    confirm_violations: bool = Field(
        False,
        description=(
            "go ahead although the change makes people break a separation-of-duties rule "
            "(a dry run lists them); needs a reason. Exempts nobody: each violation is "
            "audited and stays an open finding until it goes"
        ),
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="why the violations are accepted (with confirm_violations)"
    )

    @model_validator(mode="after")
    def _reason_with_confirmation(self) -> ConfirmViolations:
        if self.confirm_violations and (self.reason is None or not self.reason.strip()):
            raise ValueError("confirm_violations needs a reason")
        if self.reason is not None and not self.confirm_violations:
            raise ValueError("a reason is given only with confirm_violations")
        return self


class MappingIn(ConfirmViolations):
    group_id: uuid.UUID | None = Field(None, description="a group the service holds (its id)")
    okta_group: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        None,
        description=(
            "an Okta group, by its Okta id (00g...) or its exact name, looked up through the "
            "Okta API: recorded under its Okta id, its members brought in as reconciliation "
            "brings them, then mapped"
        ),
    )
    connector: Annotated[str, Field(max_length=100, description="connector slug")]
    access_level: AccessLevel
    actions: list[ActionName] | None = Field(None, max_length=500)
    policies: dict[ActionName, Policy] | None = Field(None, max_length=500)
    expires_at: AwareDatetime | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _one_group(self) -> MappingIn:
        if (self.group_id is None) == (self.okta_group is None):
            raise ValueError("give exactly one of group_id, okta_group")
        return self


class MappingPatch(ConfirmViolations):
    access_level: AccessLevel = Absent()
    actions: list[ActionName] | None = Field(None, max_length=500)
    policies: dict[ActionName, Policy] | None = Field(None, max_length=500)
    expires_at: AwareDatetime | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None


class MappingOut(BaseModel):
    id: int
    group_id: uuid.UUID
    group: str
    connector: str
    access_level: AccessLevel
    actions: list[str] | None
    policies: dict[str, Policy] | None
    expires_at: dt.datetime | None
    description: str | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class MappingPage(BaseModel):
    items: list[MappingOut]
    next_cursor: str | None


class MappingQuery(Input):
    group_id: uuid.UUID | None = None
    connector: Annotated[str, Field(max_length=100)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class MappingPath(Input):
    mapping_id: Annotated[int, Field(ge=1, le=INT32)]


class GrantChange(BaseModel):
    """One user gaining, losing or changing access to one connector."""

    user_id: uuid.UUID
    user_name: str
    connector: str
    access_level: AccessLevel
    previous_level: AccessLevel | None = None
    reasons: list[str] = []


class Changes(BaseModel):
    """What a change did to grants (or, for a dry run, would do)."""

    dry_run: bool
    gain: list[GrantChange]
    lose: list[GrantChange]
    change: list[GrantChange]
    # Revocations the mass-revocation brake held for an admin's confirmation.
    held: int = 0
    hold_url: str | None = None


class OktaGroupMapped(BaseModel):
    """The Okta group a mapping was made for (``okta_group``), as Okta listed it."""

    id: str = Field(description="Okta's id, kept as the group's externalId")
    name: str
    members: int = Field(description="the members Okta lists")
    adopted: bool = Field(description="the service held the group already (SCIM, a hook)")
    people_added: list[str] = Field(
        description="user names of members new to the directory (in a dry run: who would be)"
    )


class SeparationViolationOut(BaseModel):
    """A person a mapping change makes break a separation-of-duties rule."""

    user_id: uuid.UUID
    user_name: str
    rule_id: int
    rule: str
    held: list[str] = Field(
        description="the rule's side the person held before (empty: the change gives both)"
    )
    new: list[str] = Field(description="the rule's side the change gives")


class MappingResult(Changes):
    mapping: MappingOut | None
    okta_group: OktaGroupMapped | None = None
    violations: list[SeparationViolationOut] = Field(
        [],
        description=(
            "separation-of-duties violations the change begins (or, confirmed, began): the "
            "first 100; a commit without confirm_violations is refused with them (409)"
        ),
    )
    violations_total: int = 0
    confirmation_needed: bool = Field(
        False, description="a commit of this change needs confirm_violations and a reason"
    )


# -- users, groups -----------------------------------------------------------------


class UserOut(BaseModel):
    id: uuid.UUID
    user_name: str
    external_id: str | None
    display_name: str | None
    email: str | None
    department: str | None
    employee_number: str | None
    active: bool
    state: Literal["active", "deactivated", "offboarded", "deleted"]


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class UserQuery(Input):
    q: Annotated[str, Field(min_length=1, max_length=255, description="search")] | None = None
    active: bool | None = None
    department: Annotated[str, Field(max_length=255)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class UserPath(Input):
    user_id: uuid.UUID


class Source(BaseModel):
    source: str
    group: str | None = None
    expires_at: dt.datetime | None = None
    justification: str | None = None


class ActionAccess(BaseModel):
    name: str
    kind: ActionKind
    org_policy: Policy
    effective: dict[str, Decision] = Field(description="decision per interface offered")


LAST_USED = (
    "the latest decision that used the grant, exact to the hour (a use within an hour "
    "of the recorded one is not written again), and written a few seconds after it"
)
LAST_AGENT = "the agent acting for the person in that last use (AuthZEN subject.properties.act)"
LAST_EVALUATION = "the evaluation_id of the AuthZEN answer that last used the grant"


class GrantAccess(BaseModel):
    grant_id: int
    connector: str
    access_level: AccessLevel
    granted_at: dt.datetime
    last_used_at: dt.datetime | None = Field(description=LAST_USED)
    last_used_agent: str | None = Field(description=LAST_AGENT)
    last_evaluation_id: str | None = Field(description=LAST_EVALUATION)
    sources: list[Source]
    actions: list[ActionAccess]


class UserAccess(BaseModel):
    user: UserOut
    grants: list[GrantAccess]


class GroupOut(BaseModel):
    id: uuid.UUID
    display_name: str
    external_id: str | None
    members: int


class GroupPage(BaseModel):
    items: list[GroupOut]
    next_cursor: str | None


class GroupQuery(Input):
    q: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class GroupPath(Input):
    group_id: uuid.UUID


class PageQuery(Input):
    limit: Limit = 100
    cursor: Cursor | None = None


# -- grants and exceptions ----------------------------------------------------------


class GrantOut(BaseModel):
    id: int
    user_id: uuid.UUID
    user_name: str
    connector: str
    access_level: AccessLevel
    granted_at: dt.datetime
    last_used_at: dt.datetime | None = Field(description=LAST_USED)
    last_used_agent: str | None = Field(description=LAST_AGENT)
    last_evaluation_id: str | None = Field(description=LAST_EVALUATION)
    revoked_at: dt.datetime | None
    revoke_reason: str | None


class GrantPage(BaseModel):
    items: list[GrantOut]
    next_cursor: str | None


class GrantQuery(Input):
    user_id: uuid.UUID | None = None
    connector: Annotated[str, Field(max_length=100)] | None = None
    state: Literal["live", "revoked", "all"] = "live"
    unused_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        None, description="only grants not used (or, never used, not granted) in this many days"
    )
    limit: Limit = 100
    cursor: Cursor | None = None


class ExceptionIn(Input):
    user_id: uuid.UUID
    connector: Annotated[str, Field(max_length=100)]
    access_level: AccessLevel
    justification: Annotated[str, Field(min_length=1, max_length=2000)]
    expires_at: AwareDatetime
    actions: list[ActionName] | None = Field(None, max_length=500)


class ExceptionOut(BaseModel):
    id: int
    user_id: uuid.UUID
    user_name: str
    connector: str
    access_level: AccessLevel
    actions: list[str] | None
    justification: str
    expires_at: dt.datetime
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    state: ExceptionState = Field(
        description="active: unexpired and unrevoked; expired: its time ran out; revoked: ended"
    )
    withdrawn: bool = Field(
        False,
        description="an access review revoked this access after the exception was made (and "
        "nobody lifted that revocation): active or not, it justifies nothing",
    )


class ExceptionPage(BaseModel):
    items: list[ExceptionOut]
    next_cursor: str | None


class ExceptionQuery(Input):
    user: Annotated[str, Field(min_length=1, max_length=320)] | None = Field(
        None, description="the person: our id, Okta id (externalId), userName or email"
    )
    user_id: uuid.UUID | None = None
    connector: Annotated[str, Field(max_length=100, description="connector slug")] | None = None
    state: ExceptionState | Literal["all"] = ExceptionState.ACTIVE
    expires_before: AwareDatetime | None = Field(None, description="expiring before (exclusive)")
    expires_after: AwareDatetime | None = Field(None, description="expiring at or after")
    created_by: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        None, description="the actor who created it, exactly as the audit log names them"
    )
    limit: Limit = 100
    cursor: Cursor | None = None


class ExceptionResult(Changes):
    exception: ExceptionOut


class ExceptionPath(Input):
    exception_id: Annotated[int, Field(ge=1, le=INT32)]


class RevokeIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


# -- audit ----------------------------------------------------------------------------


class AuditQuery(Input):
    actor: Annotated[str, Field(max_length=255)] | None = None
    subject_type: Annotated[str, Field(max_length=32)] | None = None
    subject_id: Annotated[str, Field(max_length=255)] | None = None
    user_id: uuid.UUID | None = None
    source: Annotated[str, Field(max_length=32)] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class AuditEventOut(BaseModel):
    id: int
    occurred_at: str
    actor: str
    source: str
    action: str
    subject_type: str
    subject_id: str
    user_id: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    # The X-Request-ID of the request that made the change (absent: none, or older events).
    request_id: str | None = None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


# -- decisions ------------------------------------------------------------------------


class DecisionIn(Input):
    user: Annotated[str, Field(min_length=1, max_length=255, description="user id or userName")]
    connector: Annotated[str, Field(min_length=1, max_length=100, description="connector slug")]
    action: Annotated[str, Field(min_length=1, max_length=200)]
    interface: Interface


class DecisionOut(BaseModel):
    decision: Decision
    reasons: list[str]


class DecisionBatchIn(Input):
    checks: list[DecisionIn] = Field(min_length=1, max_length=100)


class DecisionBatchOut(BaseModel):
    results: list[DecisionOut]


# -- oversight: findings, job runs, Okta sync runs ---------------------------------------


class FindingQuery(Input):
    kind: FindingKind | None = None
    state: FindingState | None = None
    subject_type: Annotated[str, Field(max_length=32)] | None = None
    subject_id: Annotated[str, Field(max_length=255)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class FindingOut(BaseModel):
    id: int
    kind: FindingKind
    severity: Severity
    subject_type: str
    subject_id: str
    evidence: dict[str, Any]
    state: FindingState
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    resolved_at: AwareDatetime | None
    decided_by: str | None
    decision_reason: str | None


class FindingPage(BaseModel):
    items: list[FindingOut]
    next_cursor: str | None


class FindingPath(Input):
    finding_id: Annotated[int, Field(ge=1, le=INT64)]


class FindingDecisionIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class JobRunQuery(Input):
    job: Annotated[str, Field(max_length=64)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class JobRunOut(BaseModel):
    id: int
    job: str
    trigger: str
    started_at: AwareDatetime
    finished_at: AwareDatetime | None
    outcome: str
    counts: dict[str, Any]
    error: str | None


class JobRunPage(BaseModel):
    items: list[JobRunOut]
    next_cursor: str | None


class OktaRunQuery(Input):
    kind: Literal["reconcile", "catch-up"] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class OktaRunOut(BaseModel):
    id: int
    kind: str
    mode: str | None
    dry_run: bool
    status: str
    started_at: str
    finished_at: str | None
    counts: dict[str, Any]
    drift: dict[str, Any]
    requests: int
    error: str | None


class OktaRunPage(BaseModel):
    items: list[OktaRunOut]
    next_cursor: str | None


# -- offboarding ----------------------------------------------------------------------


class OffboardingIn(Input):
    """The person, by exactly one of userName, externalId or employeeNumber."""

    userName: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    externalId: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    employeeNumber: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    ticket: Annotated[str, Field(max_length=255)] | None = None
    effective_at: AwareDatetime | None = Field(
        default=None, description="when to take effect; omitted or past: now"
    )

    @model_validator(mode="after")
    def _one_identifier(self) -> OffboardingIn:
        given = [n for n in ("userName", "externalId", "employeeNumber") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of userName, externalId, employeeNumber")
        return self

    @property
    def identified_by(self) -> str:
        return next(n for n in ("userName", "externalId", "employeeNumber") if getattr(self, n))


class RevokedGrantOut(BaseModel):
    grant_id: int | None
    connector: str
    access_level: str


class TargetAckOut(BaseModel):
    target_id: int
    name: str
    delivered: int
    pending: int
    dead: int
    acknowledged: bool


class OffboardingOut(BaseModel):
    id: int
    url: str
    user_id: uuid.UUID
    identified_by: str
    identifier: str
    reason: str
    ticket: str | None
    source: str
    requested_by: str
    requested_at: AwareDatetime
    effective_at: AwareDatetime
    state: Literal["scheduled", "done", "cancelled"]
    executed_at: AwareDatetime | None
    cancelled_at: AwareDatetime | None
    revoked: list[RevokedGrantOut]
    # Per downstream target: its messages about this offboarding, and whether all arrived.
    targets: list[TargetAckOut]
    notes: list[str] = Field(default_factory=list)


class OffboardingPath(Input):
    offboarding_id: Annotated[int, Field(ge=1, le=INT32)]


class ReasonIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


# -- downstream targets and their outbox ---------------------------------------------

TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
Secret = Annotated[str, Field(min_length=16, max_length=500)]
TargetUrl = Annotated[str, Field(min_length=1, max_length=2000)]


class TargetIn(Input):
    name: TargetName
    kind: TargetKind
    url: TargetUrl
    # The webhook signing key, or the SCIM server's bearer token; never shown again.
    secret: Secret
    # Only grants of these connectors (user events always); omitted or null: every connector.
    connectors: Annotated[list[Slug], Field(max_length=200)] | None = None
    enabled: bool = True
    # Attempts before a message is dead-lettered (default: PROVISIONING_DELIVERY_MAX_ATTEMPTS).
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None


class TargetPatch(Input):
    name: TargetName | None = None
    url: TargetUrl | None = None
    secret: Secret | None = None
    connectors: Annotated[list[Slug], Field(max_length=200)] | None = None
    enabled: bool | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> TargetPatch:
        for name in self.model_fields_set - {"connectors"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class TargetOut(BaseModel):
    id: int
    name: str
    kind: TargetKind
    url: str
    connectors: list[str] | None
    enabled: bool
    max_attempts: int
    created_at: AwareDatetime
    updated_at: AwareDatetime
    pending: int
    dead: int
    oldest_pending_at: AwareDatetime | None


class TargetPage(BaseModel):
    items: list[TargetOut]
    next_cursor: str | None = None


class TargetPath(Input):
    target_id: Annotated[int, Field(ge=1, le=INT32)]


class TargetDeleteQuery(Input):
    # Drop the messages still owed to the target (audited); otherwise deletion is refused.
    discard_undelivered: bool = False


class MessageQuery(Input):
    state: MessageState | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class MessageOut(BaseModel):
    id: int
    event_id: uuid.UUID
    event_type: str
    user_id: uuid.UUID
    state: MessageState
    attempts: int
    created_at: AwareDatetime
    next_attempt_at: AwareDatetime
    delivered_at: AwareDatetime | None
    last_error: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = None


class RetryIn(Input):
    # The dead letters to retry; omitted or null: every dead letter of the target.
    message_ids: (
        Annotated[list[Annotated[int, Field(ge=1, le=INT64)]], Field(max_length=10_000)] | None
    ) = None


class RetryOut(BaseModel):
    retried: int


# -- revocations held by the mass-revocation brake ------------------------------------


class HoldOut(BaseModel):
    id: int
    url: str
    cause: str
    actor: str
    source: str
    users: int
    revocations: int
    active_grants: int
    share: float
    state: Literal["held", "confirmed"]
    held_at: AwareDatetime
    decided_by: str | None
    decided_at: AwareDatetime | None
    revoked: int | None


class HoldPage(BaseModel):
    items: list[HoldOut]
    next_cursor: str | None = None


class HoldQuery(Input):
    state: Literal["held", "confirmed"] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class HoldPath(Input):
    hold_id: Annotated[int, Field(ge=1, le=INT32)]


# -- access reviews -------------------------------------------------------------------


class ReviewQuery(Input):
    state: CampaignState | None = None
    trigger: CampaignTrigger | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class ReviewIn(Input):
    """A campaign to open now, over every live grant of the connectors named (or of all)."""

    name: Name | None = None
    connectors: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, min_length=1, max_length=200, description="connector slugs; omitted: every connector"
    )
    deadline: AwareDatetime | None = Field(
        None, description="omitted: PROVISIONING_REVIEW_DEADLINE_DAYS from now"
    )
    no_response: NoResponse | None = Field(
        None,
        description="what closing does to an item nobody decided; "
        "omitted: PROVISIONING_REVIEW_NO_RESPONSE",
    )


class ReviewOut(BaseModel):
    id: int
    url: str
    name: str
    trigger: CampaignTrigger
    connectors: list[str] | None = Field(description="slugs in scope; null: every connector")
    subject_user_id: uuid.UUID | None = Field(description="whose role changed, for role_change")
    context: dict[str, Any] | None
    created_by: str
    created_at: AwareDatetime
    deadline: AwareDatetime
    no_response: NoResponse
    state: CampaignState
    closed_at: AwareDatetime | None
    closed_by: str | None
    counts: dict[str, int]


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    next_cursor: str | None


class ReviewPath(Input):
    review_id: Annotated[int, Field(ge=1, le=INT32)]


class ReviewItemPath(Input):
    review_id: Annotated[int, Field(ge=1, le=INT32)]
    item_id: Annotated[int, Field(ge=1, le=INT64)]


class ReviewItemQuery(Input):
    reviewer: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    decision: Literal["approve", "revoke", "none"] | None = Field(
        None, description="none: items nobody decided yet"
    )
    user_id: uuid.UUID | None = None
    connector: Annotated[str, Field(max_length=100, description="connector slug")] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class ReviewItemOut(BaseModel):
    id: int
    campaign_id: int
    grant_id: int
    user_id: uuid.UUID
    connector_id: int
    snapshot: dict[str, Any] = Field(
        description="what the reviewer sees, as it was when the campaign opened: user_name, "
        "connector, access_level, granted_at, last_used_at, why, user_status, department, manager"
    )
    reviewer: str | None
    reviewer_role: ReviewerRole | None
    reviewer_user_id: uuid.UUID | None
    decision: ReviewDecision | None
    comment: str | None
    decided_by: str | None
    decided_at: AwareDatetime | None
    outcome: ItemOutcome | None
    applied_at: AwareDatetime | None
    lifted_at: AwareDatetime | None = Field(
        None, description="when an admin lifted the revocation (it withdraws nothing since)"
    )
    lifted_by: str | None = None
    lift_reason: str | None = None


class ReviewItemPage(BaseModel):
    items: list[ReviewItemOut]
    next_cursor: str | None


class ReviewDecisionIn(Input):
    """Approve keeps the grant; revoke removes it when the campaign closes (say why)."""

    decision: ReviewDecision
    comment: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    override: bool = Field(
        False,
        description="decide instead of the item's named reviewer (an admin, saying why in "
        "the comment); audited as an override",
    )

    @model_validator(mode="after")
    def _revocations_say_why(self) -> ReviewDecisionIn:
        if self.decision is ReviewDecision.REVOKE and not self.comment:
            raise ValueError("a revocation needs a comment")
        return self


class ReviewLiftIn(Input):
    """Lift the revocation a closed campaign applied to the item, saying why."""

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]


class ReviewLiftOut(Changes):
    """The item, its revocation lifted, and the grants the engine gave back."""

    item: ReviewItemOut


# -- access requests --------------------------------------------------------------------


class RequestPolicyIn(Input):
    """Make a connector requestable: who approves (in order), for how long at most."""

    approvers: list[Approver] = Field(
        min_length=1, max_length=2, description="one or two stages, in order: owner, manager"
    )
    max_days: Annotated[int, Field(ge=1, le=365)]
    decide_within_days: Annotated[int, Field(ge=1, le=90)] = 7


class RequestPolicyOut(BaseModel):
    connector: str
    approvers: list[Approver]
    max_days: int
    decide_within_days: int
    updated_by: str
    updated_at: dt.datetime


class RequestPolicyPage(BaseModel):
    items: list[RequestPolicyOut]


class AccessRequestIn(Input):
    """Ask for a connector, for yourself or (``user_id``) for a report of yours."""

    connector: Annotated[str, Field(max_length=100)]
    access_level: AccessLevel
    actions: list[ActionName] | None = Field(None, max_length=500)
    justification: Annotated[str, Field(min_length=1, max_length=2000)]
    duration_days: Annotated[int, Field(ge=1, le=365)]
    user_id: uuid.UUID | None = Field(None, description="omitted: the person asking")


class RequestStepOut(BaseModel):
    stage: int
    role: Approver
    approver: str
    decision: RequestDecision
    comment: str | None
    decided_at: dt.datetime


class CallItemOut(BaseModel):
    """One call of a bundled task: ``action`` with these arguments (their digest) under
    this policy version."""

    action: str | None
    arguments_digest: str | None
    policy_version: str | None
    evaluation_id: str | None


class CallApprovalOut(BaseModel):
    """What a ``call`` request approves: one call of ``action`` with these arguments (their
    digest) under this policy version (or a bundle's ``items``, each such a call, decided
    as one), until ``approved_until`` once approved."""

    action: str | None
    arguments_digest: str | None
    policy_version: str | None
    evaluation_id: str | None
    task_id: str | None
    approved_until: dt.datetime | None
    items: list[CallItemOut] | None = None


class AccessRequestOut(BaseModel):
    id: int
    url: str
    user_id: uuid.UUID
    requested_by: str
    connector: str
    access_level: AccessLevel
    actions: list[str] | None
    justification: str
    duration_days: int
    approvers: list[Approver]
    stage: int
    state: RequestState
    deadline: dt.datetime
    created_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    granted_at: dt.datetime | None
    expires_at: dt.datetime | None
    # "access" (a connector for a time) or "call" (one tool call: what it approves in call)
    kind: str = "access"
    call: CallApprovalOut | None = None
    steps: list[RequestStepOut]


class AccessRequestPage(BaseModel):
    items: list[AccessRequestOut]
    next_cursor: str | None


class AccessRequestPath(Input):
    request_id: Annotated[int, Field(ge=1, le=INT32)]


class AccessRequestQuery(Input):
    state: RequestState | None = None
    user_id: uuid.UUID | None = None
    connector: Annotated[str, Field(max_length=100)] | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class RequestDecisionIn(Input):
    decision: RequestDecision
    comment: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class RequestCancelIn(Input):
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


# -- separation of duties ---------------------------------------------------------------


class SeparationRuleIn(Input):
    """Nobody may hold any entry of ``these`` with any of ``those``: a connector's slug, or
    ``slug:action`` for one of its actions."""

    name: Name
    these: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=200)
    those: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=200)
    owner: Annotated[str, Field(min_length=1, max_length=255)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class SeparationRuleOut(BaseModel):
    id: int
    name: str
    these: list[str]
    those: list[str]
    owner: str
    reason: str
    created_by: str
    created_at: dt.datetime


class SeparationRulePage(BaseModel):
    items: list[SeparationRuleOut]


class SeparationRulePath(Input):
    rule_id: Annotated[int, Field(ge=1, le=INT32)]


class SeparationExemptionIn(Input):
    user_id: uuid.UUID
    justification: Annotated[str, Field(min_length=1, max_length=2000)]
    expires_at: AwareDatetime


class SeparationExemptionOut(BaseModel):
    id: int
    rule_id: int
    user_id: uuid.UUID
    justification: str
    approved_by: str
    expires_at: dt.datetime
    created_at: dt.datetime
