"""`provisioning doctor`: what an operator checks before blaming the code, one verdict a line.

Each check reads the deployment as it is (the settings from the environment, the
database, Okta, each delivery target) and changes nothing: it never migrates, never
delivers and never writes a row. A target is asked ``HEAD`` of its URL through the
delivery worker's own client (:func:`provisioning.delivery.transport.client`), so the
egress policy, DNS, TLS and the network are tried exactly as a delivery would try them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from provisioning.database import Database, redact
from provisioning.delivery import transport
from provisioning.delivery.egress import Egress, EgressRefused
from provisioning.delivery.message import DeliveryFailed
from provisioning.delivery.models import Target, TargetKind
from provisioning.settings import Settings, SettingsError, load

# How far a clock may drift before it matters: Okta events and JWTs carry times, and the
# audit log and expiry compare them with ours.
SKEW_WARN = dt.timedelta(seconds=2)
SKEW_FAIL = dt.timedelta(seconds=30)
TIMEOUT = 5.0


class Verdict(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Line:
    """One check's verdict and what it found, in a sentence an on-call engineer can act on."""

    verdict: Verdict
    check: str
    detail: str


Clock = Callable[[], dt.datetime]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def skew_line(check: str, theirs: dt.datetime, ours: dt.datetime) -> Line:
    """The verdict on a clock ``theirs`` read when ours read ``ours``."""
    drift = theirs - ours
    size = abs(drift)
    verdict = Verdict.OK if size < SKEW_WARN else Verdict.WARN if size < SKEW_FAIL else Verdict.FAIL
    way = "ahead of" if drift > dt.timedelta(0) else "behind"
    return Line(verdict, check, f"{size.total_seconds():.3f}s {way} this host's clock")


def examine(*, clock: Clock = _now, timeout: float = TIMEOUT) -> Iterator[Line]:
    """Every check, in order; checks that need what an earlier one found missing are left
    out (no database, no schema, no targets)."""
    try:
        settings = load()
    except SettingsError as exc:
        yield Line(Verdict.FAIL, "configuration", str(exc))
        return
    yield _configuration(settings)
    database = Database(settings.database_url)
    try:
        reachable = yield from _database(database, clock)
        if reachable:
            yield from _targets(settings, database, timeout)
    finally:
        database.dispose()
    yield from _okta(settings, clock)


def _configuration(settings: Settings) -> Line:
    missing = [
        name
        for name, value in (
            ("PROVISIONING_PUBLIC_URL", settings.public_url),
            ("PROVISIONING_OKTA_HOOK_SECRETS", settings.okta_hook_secret_list),
            ("PROVISIONING_AUDIT_SIGNING_KEY", settings.audit_signing_key),
        )
        if not value
    ]
    where = redact(settings.database_url)
    if missing:
        return Line(
            Verdict.WARN,
            "configuration",
            f"valid (database {where}); not set: {', '.join(missing)}",
        )
    return Line(Verdict.OK, "configuration", f"valid (database {where})")


def _database(database: Database, clock: Clock) -> Iterator[Line]:
    """Reachability, schema revision and the database's clock; returns whether it answered."""
    now = (
        "SELECT clock_timestamp()"
        if database.dialect == "postgresql"
        else "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"
    )
    try:
        with database.engine.connect() as connection:
            before = clock()
            theirs = connection.execute(text(now)).scalar_one()
            after = clock()
        current = database.current()
    except SQLAlchemyError as exc:
        yield Line(Verdict.FAIL, "database", database.explain(exc))
        return False
    yield Line(Verdict.OK, "database", f"{database.dialect} answers")
    head = database.head()
    if current == head:
        yield Line(Verdict.OK, "schema", f"at head ({head})")
    else:
        yield Line(
            Verdict.FAIL,
            "schema",
            f"at revision {current or 'none'}, head is {head}: run `provisioning db upgrade`",
        )
    if isinstance(theirs, str):
        theirs = dt.datetime.fromisoformat(theirs)
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=dt.UTC)
    yield skew_line("clock (database)", theirs, before + (after - before) / 2)
    return True


def _targets(settings: Settings, database: Database, timeout: float) -> Iterator[Line]:
    try:
        with database.reader() as session:
            found = list(
                session.execute(
                    select(Target.name, Target.url, Target.enabled).where(
                        Target.kind != TargetKind.CALLBACK  # its URLs are each task's
                    )
                )
            )
    except SQLAlchemyError:  # a schema too old to have targets: the schema line said so
        return
    if not found:
        yield Line(Verdict.OK, "targets", "none configured")
        return
    egress = Egress(settings.delivery_allowed_network_list)
    with transport.client(egress, timeout=timeout) as client:
        for name, url, enabled in found:
            yield _target(client, egress, f"target {name}", url, enabled)


def _target(client: httpx2.Client, egress: Egress, check: str, url: str, enabled: bool) -> Line:
    shown = urlsplit(url)._replace(query="", fragment="").geturl()  # no query credentials
    if not enabled:
        return Line(Verdict.OK, check, f"disabled, not tried ({shown})")
    parts = urlsplit(url)
    try:
        egress.addresses(
            parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        )
    except EgressRefused as exc:
        return Line(Verdict.FAIL, check, f"{shown}: {exc} (PROVISIONING_DELIVERY_ALLOWED_NETWORKS)")
    except OSError as exc:
        return Line(Verdict.FAIL, check, f"{parts.hostname} does not resolve: {exc}")
    try:
        response = client.head(url)
    except httpx2.HTTPError as exc:
        return Line(Verdict.FAIL, check, f"{shown}: {transport.failure(exc)}")
    except DeliveryFailed as exc:  # the egress policy, on the address connected to
        return Line(Verdict.FAIL, check, f"{shown}: {exc}")
    if response.status_code >= 500 and response.status_code != 501:  # 501: no HEAD, but up
        return Line(Verdict.WARN, check, f"{shown} answers HTTP {response.status_code}")
    return Line(Verdict.OK, check, f"{shown} answers HTTP {response.status_code}")


def _okta(settings: Settings, clock: Clock) -> Iterator[Line]:
    hooks = "event hooks accepted" if settings.okta_hook_secret_list else "event hooks refused"
    if not settings.okta_org_url:
        yield Line(Verdict.OK, "okta", f"API not configured (SCIM only); {hooks}")
        return
    from provisioning.okta.client import OktaError, from_settings

    try:
        client = from_settings(settings)
    except OktaError as exc:
        yield Line(Verdict.FAIL, "okta", str(exc))
        return
    try:
        before = clock()
        _, headers = client.request("GET", "/api/v1/users?limit=1")
        after = clock()
    except OktaError as exc:
        yield Line(Verdict.FAIL, "okta", f"{settings.okta_org_url}: {exc}")
        return
    finally:
        client.close()
    yield Line(Verdict.OK, "okta", f"{settings.okta_org_url} answers with our credentials; {hooks}")
    date = next((v for k, v in headers.items() if k.lower() == "date"), None)
    if date:
        # An HTTP date has whole seconds: half a second either way is rounding, not drift.
        theirs = email.utils.parsedate_to_datetime(date) + dt.timedelta(milliseconds=500)
        yield skew_line("clock (okta)", theirs, before + (after - before) / 2)
