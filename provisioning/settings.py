"""Service configuration, read from the environment with pydantic-settings.

``DATABASE_URL`` is read as is; every other setting is prefixed ``PROVISIONING_``.
A bad value fails at start with one line naming the setting (:func:`load`).
"""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioning.audit.checkpoints import key_text, private_key

DEFAULT_DATABASE_URL = "sqlite:///./provisioning.db"


class SettingsError(Exception):
    """A setting has a value the service cannot start with."""


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="PROVISIONING_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL; sqlite:///path or postgresql://user@host/db",
    )
    # Tracing (the `otel` extra): each request and its SQL statements as spans, sent over
    # OTLP/HTTP to this endpoint's /v1/traces. Unset: no OpenTelemetry module is imported.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT", pattern=r"^https?://\S+$"
    )
    otel_service_name: str = Field(
        default="connector-provisioning", validation_alias="OTEL_SERVICE_NAME", min_length=1
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # JSON lines; "auto": plain text when stderr is a terminal (provisioning/logs.py).
    log_format: Literal["auto", "json", "text"] = "auto"
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    okta_hook_header: str = Field(
        default="Authorization",
        pattern=r"^[A-Za-z0-9-]+$",
        description="Header Okta's event hooks authenticate with (authScheme HEADER)",
    )
    okta_hook_secrets: str = Field(
        default="",
        repr=False,
        description="Comma-separated secrets accepted on that header (two during a rotation)",
    )
    # OAuth 2.0 JWT access tokens (RFC 9068) for /api/v1; unset issuer: static tokens only.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwks_url: str | None = None
    # Allowed clock skew when checking exp/nbf/iat, in seconds.
    # Where clients reach this service (https://host[:port], no path): the AuthZEN Policy
    # Decision Point identifier its metadata names; unset, the URL of each request.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+$")
    # The interface an AuthZEN evaluation is asked for when its context names none.
    authzen_interface: Literal["web", "mobile", "desktop", "code"] = "web"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Seals SCIM paging cursors (RFC 9865); every replica must share it. When unset, a
    # random one is generated on first start and kept in the database (service_secrets).
    scim_cursor_secret: str | None = Field(default=None, min_length=16)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if value.startswith(("sqlite:", "postgresql+psycopg:")):
            return value
        raise ValueError("must be a sqlite:/// or postgresql:// URL")

    # Declared before the org URL, whose check reads it.
    okta_allow_http: bool = Field(
        default=False, description="Accept an http:// Okta org URL (a local test server)"
    )
    okta_org_url: str | None = Field(
        default=None, pattern=r"^https?://\S+$", description="e.g. https://example.okta.com"
    )

    @field_validator("okta_org_url")
    @classmethod
    def _okta_over_https(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and value.startswith("http://") and not info.data.get("okta_allow_http"):
            raise ValueError(
                "http:// is refused; set PROVISIONING_OKTA_ALLOW_HTTP=true to allow it "
                "(a local test server only)"
            )
        return value

    okta_api_token: str | None = Field(default=None, repr=False, description="SSWS API token")
    okta_client_id: str | None = Field(default=None, description="OAuth 2.0 service app id")
    okta_private_key: str | None = Field(
        default=None, repr=False, description="The service app's private key: PEM, JWK or a path"
    )
    okta_writeback: bool = False
    # An Okta event published more than this after we received it is ordered at its
    # receipt: a time in the future of its receipt is not trusted.
    okta_event_skew_seconds: int = Field(default=300, ge=0, le=86_400)

    # Job schedules: crontab expressions (minute hour day month weekday), in UTC.
    schedule_offboardings: str = "* * * * *"
    schedule_okta_inbox: str = "* * * * *"
    schedule_okta_writeback: str = "* * * * *"
    schedule_okta_catch_up: str = "*/5 * * * *"
    schedule_okta_reconcile_incremental: str = "*/15 * * * *"
    schedule_okta_reconcile: str = "0 2 * * *"
    schedule_expiry: str = "*/10 * * * *"
    schedule_stale_scan: str = "0 3 * * *"
    schedule_outbox_prune: str = "30 4 * * *"
    # Access reviews: a campaign over every grant each quarter; due campaigns closed hourly.
    schedule_reviews: str = "0 6 1 1,4,7,10 *"
    schedule_reviews_close: str = "15 * * * *"
    review_deadline_days: int = Field(default=14, ge=1, le=365)
    # The person (userName or email) who decides review items without a reviewer (no
    # manager, no owner); audited as "fallback". Unset (or no active user): any admin.
    review_fallback: str | None = None
    # What closing does to an item nobody decided.
    review_no_response: Literal["keep", "revoke"] = "keep"
    dormant_after_days: int = Field(default=90, gt=0)
    # Targets are told this many days ahead of an exception's or mapping's expiry
    # and of an access review's deadline.
    reminder_days: int = Field(default=7, ge=0, le=365)
    # Call-level approval (docs/requests.md): how long an approved call may be made, and
    # how long a call's approval task waits for its approvers.
    call_approval_minutes: int = Field(default=60, ge=1, le=10_080)
    call_task_hours: int = Field(default=24, ge=1, le=720)
    # Signs the binding tokens of requestable denials; every replica must share it. When
    # unset, a random one is made on first use and kept in the database (service_secrets).
    approval_secret: str | None = Field(default=None, repr=False, min_length=16)
    # How often a standby worker tries to take over the schedule (seconds).
    # Delivery to downstream targets: retries back off exponentially (with jitter)
    # from delivery_backoff_seconds up to delivery_max_backoff_seconds; after a
    # target's max attempts (delivery_max_attempts for new targets) a message is
    # dead-lettered. A worker holds the messages it claimed for the lease.
    delivery_max_attempts: int = Field(default=15, ge=1, le=100)
    delivery_backoff_seconds: float = Field(default=2, gt=0)
    delivery_max_backoff_seconds: float = Field(default=600, gt=0)
    delivery_poll_seconds: float = Field(default=1, gt=0, le=60)
    delivery_concurrency: int = Field(default=8, ge=1, le=64)
    # Users' chains a worker claims per round (each up to 50 messages).
    delivery_batch: int = Field(default=200, ge=1, le=5000)
    delivery_lease_seconds: float = Field(default=60, ge=1)
    delivery_timeout_seconds: float = Field(default=10, gt=0, le=120)
    # Delivered messages are deleted this long after their acknowledgement.
    delivery_retention_days: int = Field(default=30, ge=1)
    # Comma-separated CIDRs that targets may resolve to besides public addresses
    # (provisioning/delivery/egress.py), e.g. 10.20.0.0/16 for an internal receiver.
    delivery_allowed_networks: str = ""
    # Callback completion of call-approval tasks (docs/authzen.md): comma-separated URL
    # prefixes (scheme://host[:port][/path]) a submission's callback.endpoint must fall
    # under; empty, callbacks are refused. Each notification is signed as webhooks are,
    # with callback_secret (the key the enforcement points verify with).
    callback_allowlist: str = ""
    callback_secret: str | None = Field(
        default=None, repr=False, min_length=16, validate_default=True
    )
    # A reconciliation, mapping change or group deletion revoking more than this
    # share of all live grants is held until an admin confirms it.
    mass_revocation_share: float = Field(default=0.10, gt=0, le=1)
    # ... and more than this many revocations (small organisations are not braked).
    mass_revocation_minimum: int = Field(default=100, ge=0)
    leader_poll_seconds: float = Field(default=15, gt=0, le=60)
    # Signs audit checkpoints (Ed25519, PEM or JWK, or a file holding it); kept as the
    # key's text. Unset: no checkpoints, and the audit-checkpoint job does not run.
    audit_signing_key: str | None = Field(default=None, repr=False)
    schedule_audit_checkpoint: str = "0 * * * *"

    # The admin console at /console/ (provisioning/console). Its session cookies are signed
    # with console_secret_key; unset, with a random key made once and kept in the database.
    console_secret_key: str | None = Field(default=None, repr=False, min_length=16)
    # OpenID Connect sign-in (authorization code + PKCE): unset issuer, token sign-in only.
    console_oidc_issuer: str | None = Field(default=None, pattern=r"^https?://\S+$")
    console_oidc_client_id: str | None = None
    console_oidc_client_secret: str | None = Field(default=None, repr=False)
    # A console role is granted by any of these IdP groups or token scopes (comma-separated);
    # the highest role matched wins. Static API tokens carry scopes only.
    console_admin: str = "admin:write"
    console_reviewer: str = ""
    console_viewer: str = "admin:read"
    # The requester sees only the requests pages: asks for access, decides what awaits them.
    console_requester: str = "requests:write"
    # Session cookies marked Secure (keep true behind TLS; false only for plain-http tests).
    console_cookie_secure: bool = True
    console_session_hours: int = Field(default=8, ge=1, le=168)

    @property
    def delivery_allowed_network_list(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(ip_network(n, strict=False) for n in _items(self.delivery_allowed_networks))

    @field_validator("delivery_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in _items(value):
            try:
                ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from None
        return value

    @property
    def callback_prefix_list(self) -> tuple[str, ...]:
        return tuple(_items(self.callback_allowlist))

    @field_validator("callback_allowlist")
    @classmethod
    def _callback_prefixes(cls, value: str, info: ValidationInfo) -> str:
        for item in _items(value):
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{item!r} is not an http(s) URL prefix with a host")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(f"{item!r}: a prefix has no query, fragment or credentials")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _callbacks_signed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if _items(info.data.get("callback_allowlist") or "") and not value:
            raise ValueError(
                "required with PROVISIONING_CALLBACK_ALLOWLIST: callbacks are never sent unsigned"
            )
        return value

    @property
    def okta_hook_secret_list(self) -> list[str]:
        return [s.strip() for s in self.okta_hook_secrets.split(",") if s.strip()]

    @field_validator("*")
    @classmethod
    def _crontab(cls, value: object, info: ValidationInfo) -> object:
        """Every ``schedule_*`` setting, by its name: a crontab that falls due some day."""
        if not (info.field_name or "").startswith("schedule_"):
            return value
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a crontab expression ({exc})") from None
        if trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC)) is None:
            raise ValueError("a crontab expression that never falls due")
        return value

    @field_validator("audit_signing_key")
    @classmethod
    def _signing_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = key_text(value)
        private_key(text)
        return text

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


# The documented defaults, read from no environment: what a domain function uses when
# its caller hands it no settings (tests, the demo). Edges hand in the loaded settings.
DEFAULTS = Settings.model_construct()


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    info = Settings.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return f"PROVISIONING_{field.upper()}"


def load(**overrides: object) -> Settings:
    """Read the settings, or raise :class:`SettingsError` naming the first bad one."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = env_name(field) if field in Settings.model_fields else field
        raise SettingsError(f"invalid setting {name}: {error['msg']}") from None
