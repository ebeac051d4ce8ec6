"""The `provisioning` command: serve, db, tokens, doctor, audit, Okta, access, reviews, demo.

Each command imports what it uses when it runs: ``provisioning --help`` loads click and
no more (the settings, the database and the domain cost seconds to import).
"""

from __future__ import annotations

import dataclasses
import getpass
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from provisioning.audit import log as audit
    from provisioning.database import Database
    from provisioning.settings import Settings


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Context:
    """Settings and database, opened on first use so that --help needs neither."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._database: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from provisioning.settings import SettingsError, load

            try:
                self._settings = load()
            except SettingsError as exc:
                _fail(str(exc), 2)
        return self._settings

    @property
    def database(self) -> Database:
        if self._database is None:
            from provisioning.database import Database

            self._database = Database(self.settings.database_url)
        return self._database

    def migrated(self) -> Database:
        """The database, brought to the latest schema first."""
        from provisioning.database import DatabaseError

        try:
            self.database.upgrade()
        except DatabaseError as exc:
            _fail(str(exc))
        return self.database

    @staticmethod
    def origin(reason: str | None = None) -> audit.Origin:
        from provisioning.audit import log as audit

        return audit.Origin(
            actor=f"cli:{getpass.getuser()}", source=audit.Source.CLI, reason=reason
        )


pass_context = click.make_pass_decorator(Context, ensure=True)


def domain_errors(*kinds: type[Exception] | str) -> Callable:
    """Turn the domain's refusals into one clear line and a non-zero exit. A kind may be
    named ``"module:Class"``, imported only when the command runs."""

    def decorate(command: Callable) -> Callable:
        @wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caught = tuple(_named(kind) if isinstance(kind, str) else kind for kind in kinds)
            try:
                return command(*args, **kwargs)
            except caught as exc:
                _fail(str(exc))

        return wrapper

    return decorate


def _named(name: str) -> Any:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


class _Scopes(click.ParamType):
    """A token scope: click's choice of :class:`~provisioning.tokens.credentials.Scope`,
    built when first used (not for ``--help`` of the whole command)."""

    name = "scope"

    def _choice(self) -> click.Choice:
        from provisioning.tokens.credentials import Scope

        return click.Choice([s.value for s in Scope])

    def get_metavar(self, *args: Any, **kwargs: Any) -> str | None:
        return self._choice().get_metavar(*args, **kwargs)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return self._choice().convert(value, param, ctx)


class _Commands(click.Group):
    """The command group, with the commands other packages add (entry points
    ``provisioning.commands``), loaded when first asked for."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for entry in entry_points(group="provisioning.commands"):
                self.add_command(entry.load(), name=entry.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
@click.version_option(package_name="connector-provisioning")
def main() -> None:
    """Connector access provisioning service."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.option("--no-jobs", is_flag=True, help="Do not run the scheduled jobs in this process.")
@pass_context
def serve(ctx: Context, host: str, port: int, threads: int, no_jobs: bool) -> None:
    """Migrate the database, then serve the API (one gunicorn worker), with the jobs."""
    from gunicorn.app.base import BaseApplication

    from provisioning.logs import gunicorn_config
    from provisioning.web.app import create_app

    ctx.migrated()
    settings = ctx.settings

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("threads", threads)
            self.cfg.set("logger_class", "provisioning.web.logs.AccessLogger")
            self.cfg.set("logconfig_dict", gunicorn_config(settings.log_level, settings.log_format))
            # SIGTERM: the worker drains its requests, then stops what runs beside them
            # (the scheduler leadership given up, the outbox claims settled).
            self.cfg.set("worker_exit", lambda _arbiter, _worker: self.stop_background())

        def load(self):
            app = create_app(settings)
            self.background = []
            if not no_jobs:
                database = app.extensions["provisioning.database"]
                for entry in entry_points(group="provisioning.background"):
                    self.background.append(entry.load()(database, settings))
            return app

        def stop_background(self) -> None:
            for running in getattr(self, "background", []):
                running.stop()

    click.echo(f"serving on http://{host}:{port} (database: {ctx.database.dialect})", err=True)
    Server().run()


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Apply every migration up to the latest."""
    database = ctx.migrated()
    click.echo(f"database at revision {database.current()}")


@main.group()
def token() -> None:
    """Static API tokens (stored hashed)."""


@contextmanager
def _transaction(ctx: Context) -> Iterator[Any]:
    with ctx.migrated().transaction() as session:
        yield session


@token.command("create")
@click.option("--name", required=True, help="Unique name; recorded as the actor.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=_Scopes(),
    help="Repeat for several scopes.",
)
@click.option(
    "--person",
    help="The user it speaks for when it asks for access or decides (userName, email or id).",
)
@pass_context
@domain_errors("provisioning.tokens.credentials:TokenError")
def token_create(ctx: Context, name: str, scopes: tuple[str, ...], person: str | None) -> None:
    """Create a token and print its secret (the only line on stdout, shown once)."""
    from provisioning.identity.directory import person as find_person
    from provisioning.tokens import credentials

    with _transaction(ctx) as session:
        user_id = None
        if person is not None:
            user = find_person(session, person)
            if user is None:
                _fail(f"no active user {person!r}")
            user_id = user.id
        secret = credentials.create(session, name, list(scopes), ctx.origin(), person=user_id)
    click.echo(secret)


@token.command("revoke")
@click.argument("name")
@pass_context
@domain_errors("provisioning.tokens.credentials:TokenError")
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke a token at once."""
    from provisioning.tokens import credentials

    with _transaction(ctx) as session:
        credentials.revoke(session, name, ctx.origin())
    click.echo(f"token {name} revoked", err=True)


@token.command("list")
@click.option("--all", "everything", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@pass_context
def token_list(ctx: Context, everything: bool, as_json: bool) -> None:
    """The tokens: name, scopes, person bound, created, last used (never a secret)."""
    from provisioning.tokens import credentials

    with ctx.migrated().reader() as session:
        tokens = credentials.listed(session, revoked=everything)

    def when(moment: Any) -> str | None:
        return moment.isoformat(timespec="seconds") if moment else None

    rows = [
        {
            "name": t.name,
            "scopes": t.scopes,
            "person": t.person,
            "created_at": when(t.created_at),
            "last_used_at": when(t.last_used_at),
            **({"revoked_at": when(t.revoked_at)} if everything else {}),
        }
        for t in tokens
    ]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    heads = ["NAME", "SCOPES", "PERSON", "CREATED", "LAST USED"] + (
        ["REVOKED"] if everything else []
    )
    table = [heads] + [
        [
            row["name"],
            ",".join(row["scopes"]),
            row["person"] or "-",
            row["created_at"],
            row["last_used_at"] or "never",
            *([row["revoked_at"] or "-"] if everything else []),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(heads))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text.")
def doctor(as_json: bool) -> None:
    """Check the configuration, database, schema, clocks, Okta and each delivery target:
    one verdict a line (ok, warn, fail); exit 1 on any fail. Changes nothing."""
    from provisioning.doctor import Verdict, examine

    failed = False
    for line in examine():
        failed |= line.verdict is Verdict.FAIL
        if as_json:
            click.echo(
                json.dumps(
                    {"verdict": line.verdict.value, "check": line.check, "detail": line.detail}
                )
            )
        else:
            click.echo(f"{line.verdict.value:<5} {line.check:<18} {line.detail}")
    if failed:
        sys.exit(1)


@main.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "held",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A signed checkpoint file, or a directory of them (repeatable).",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="Verifies the checkpoints: PEM, JWK or a file (repeatable; default: the signing key's).",
)
@pass_context
def audit_verify(ctx: Context, held: tuple[Path, ...], public_keys: tuple[str, ...]) -> None:
    """Check every event's hash and link; exit 1 naming the first broken event.

    With checkpoints, also that the event each one signed is still in the chain with
    the hash it signed: nothing up to it was cut or rewritten.
    """
    from provisioning.audit import log as audit

    anchors = _anchors(ctx, held, public_keys) if held else []
    with ctx.migrated().reader() as session:
        result = audit.verify(session, anchors)
    if not result.intact:
        _fail(f"audit chain broken at event {result.broken_at}: {result.problem}")
    click.echo(f"audit chain intact: {result.checked} events, head {result.head_hash}")
    if not anchors:
        click.echo(
            "consistent; complete only up to a checkpoint held elsewhere (--checkpoint)", err=True
        )
        return
    latest = max(a.event_id for a in anchors)
    count = f"{len(anchors)} checkpoint{'s' if len(anchors) > 1 else ''}"
    click.echo(f"holds {count}; the latest at event {latest}")


def _anchors(
    ctx: Context, held: tuple[Path, ...], public_keys: tuple[str, ...]
) -> list[audit.Anchor]:
    """The (event id, hash) each checkpoint signed, once its signature is verified."""
    from provisioning.audit import checkpoints
    from provisioning.audit import log as audit

    try:
        keys = [checkpoints.public_key(k) for k in public_keys]
    except checkpoints.InvalidKey as exc:
        _fail(f"--public-key: {exc}", 2)
    if not keys and ctx.settings.audit_signing_key:
        keys = [checkpoints.public_key(ctx.settings.audit_signing_key)]
    if not keys:
        _fail(
            "no key to verify checkpoints: give --public-key or set PROVISIONING_AUDIT_SIGNING_KEY",
            2,
        )
    anchors = []
    for path in held:
        files = [path]
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        found = 0
        for file in files:
            for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                name = f"checkpoint {file}:{number}"
                try:
                    signed = checkpoints.read(line, keys)
                except checkpoints.CheckpointError as exc:
                    _fail(f"{name} refused: {exc}")
                anchors.append(audit.Anchor(signed.event_id, signed.hash, name))
                found += 1
        if not found:
            _fail(f"no checkpoint in {path}", 2)
    return anchors


@audit_group.command("checkpoint")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Default: stdout.")
@pass_context
def audit_checkpoint(ctx: Context, output: Any) -> None:
    """Sign the chain head (event id, hash, time) with PROVISIONING_AUDIT_SIGNING_KEY.

    Writes a compact JWS; keep it where the database's administrators cannot write,
    and give it to `audit verify --checkpoint` later.
    """
    from provisioning.audit import checkpoints

    if not ctx.settings.audit_signing_key:
        _fail("PROVISIONING_AUDIT_SIGNING_KEY is not set", 2)
    key = checkpoints.private_key(ctx.settings.audit_signing_key)
    with ctx.migrated().reader() as session:
        try:
            checkpoint = checkpoints.take(session)
        except checkpoints.CheckpointError as exc:
            _fail(str(exc))
    output.write(checkpoints.sign(checkpoint, key) + "\n")
    click.echo(f"checkpoint at event {checkpoint.event_id}, hash {checkpoint.hash}", err=True)


@audit_group.command("public-key")
@click.option("--pem", "as_pem", is_flag=True, help="PEM (SubjectPublicKeyInfo), not a JWK.")
@pass_context
def audit_public_key(ctx: Context, as_pem: bool) -> None:
    """Print the public half of PROVISIONING_AUDIT_SIGNING_KEY, to verify checkpoints with."""
    from provisioning.audit import checkpoints

    if not ctx.settings.audit_signing_key:
        _fail("PROVISIONING_AUDIT_SIGNING_KEY is not set", 2)
    key = checkpoints.public_key(ctx.settings.audit_signing_key)
    click.echo(
        checkpoints.public_pem(key).strip() if as_pem else json.dumps(checkpoints.public_jwk(key))
    )


@audit_group.command("export")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Default: stdout.")
@click.option("--since-id", default=0, type=int, help="Only events after this id.")
@pass_context
def audit_export(ctx: Context, output: Any, since_id: int) -> None:
    """Write the audit events as JSON lines."""
    from provisioning.audit import log as audit

    with ctx.migrated().reader() as session:
        count = audit.export(session, output, since_id=since_id)
    click.echo(f"exported {count} events", err=True)


def _okta(ctx: Context):
    from provisioning.okta.client import OktaError, from_settings

    try:
        return from_settings(ctx.settings)
    except OktaError as exc:
        _fail(str(exc), 2)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on a terminal; silence otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda stage, done, total: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _report(run: Any, as_json: bool) -> None:
    from provisioning.okta import runs

    record = runs.as_json(run)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        _not_mapped(record["drift"])
        counts = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
        mode = f" {record['mode']}" if record["mode"] else ""
        dry = " (dry run: nothing changed)" if record["dry_run"] else ""
        click.echo(f"{record['kind']}{mode} run {record['id']} {record['status']}{dry}")
        click.echo(f"  {counts}; {record['requests']} requests to Okta")
        for name, entries in record["drift"].items():
            for entry in entries[:20]:
                click.echo(f"  {name}: {' '.join(entry) if isinstance(entry, list) else entry}")
    if record["status"] != "succeeded":
        _fail(f"{record['kind']} failed: {record['error']}")
    if record["drift"].get("unknown_groups"):
        _fail(f"Okta has no group {', '.join(record['drift']['unknown_groups'])}")


def _not_mapped(drift: dict[str, Any]) -> None:
    """Say plainly which groups asked for (``--group``) were not reconciled, and why."""
    for okta_id, name in drift.get("unmapped_groups", []):
        click.echo(
            f"group {okta_id} ({name}) is in Okta but not mapped, so not reconciled; map it "
            f"with: provisioning mappings add --okta-group {okta_id} --connector SLUG "
            "--level read --dry-run (or POST /api/v1/mappings with okta_group)",
            err=True,
        )
    for okta_id in drift.get("unknown_groups", []):
        click.echo(
            f"group {okta_id}: Okta has no group with this id; a group can also be named: "
            "provisioning mappings add --okta-group NAME --connector SLUG --level read",
            err=True,
        )


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the drift; change nothing.")
@click.option("--group", "groups", multiple=True, help="Only this Okta group id (repeatable).")
@click.option("--incremental", is_flag=True, help="Only what changed since the last run.")
@click.option("--json", "as_json", is_flag=True, help="A JSON summary on stdout.")
@pass_context
def reconcile(
    ctx: Context, dry_run: bool, groups: tuple[str, ...], incremental: bool, as_json: bool
) -> None:
    """Find and repair drift between Okta and our memberships and user states."""
    from provisioning.okta.reconcile import reconcile as run_reconciliation

    database = ctx.migrated()
    client = _okta(ctx)
    try:
        with _progress(not as_json) as progress:
            run = run_reconciliation(
                database,
                client,
                dry_run=dry_run,
                full=not incremental,
                groups=groups or None,
                progress=progress,
                settings=ctx.settings,
            )
    finally:
        client.close()
    _report(run, as_json)


@main.group()
def okta() -> None:
    """Okta: the initial import, System Log catch-up and sync run records."""


@okta.command("catch-up")
@click.option("--json", "as_json", is_flag=True, help="A JSON summary on stdout.")
@pass_context
def okta_catch_up(ctx: Context, as_json: bool) -> None:
    """Apply System Log events the event hooks missed (each event applied once)."""
    from provisioning.okta.catchup import catch_up

    database = ctx.migrated()
    client = _okta(ctx)
    try:
        run = catch_up(database, client, settings=ctx.settings)
    finally:
        client.close()
    _report(run, as_json)


@okta.command("import")
@click.option("--all-groups", is_flag=True, help="Every Okta group, with its members.")
@click.option(
    "--group-filter",
    metavar="EXPR",
    help="The Okta groups matching this search expression (e.g. 'profile.name sw \"Eng\"').",
)
@click.option("--dry-run", is_flag=True, help="Say what would be created; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="A JSON summary on stdout.")
@pass_context
def okta_import(
    ctx: Context, all_groups: bool, group_filter: str | None, dry_run: bool, as_json: bool
) -> None:
    """Import people and groups from Okta: by default the groups mappings reference and their
    members. Resumes an interrupted import where it stopped."""
    from provisioning.okta import imports

    if all_groups and group_filter:
        _fail("--all-groups and --group-filter: give one", 2)
    database = ctx.migrated()
    client = _okta(ctx)
    try:
        with _progress(not as_json) as progress:
            summary = imports.import_directory(
                database,
                client,
                search=group_filter,
                all_groups=all_groups,
                dry_run=dry_run,
                progress=progress,
            )
    finally:
        client.close()
    record = dataclasses.asdict(summary)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        c = summary.counts
        verb = "would create" if dry_run else "created"
        head = "dry run (nothing written)" if dry_run else f"import {summary.import_id}"
        adopt = "would adopt" if dry_run else "adopted"
        adopted = f", {adopt} {c['groups_adopted']} by name" if c.get("groups_adopted") else ""
        click.echo(f"okta {head}, {summary.mode}: {summary.status} in {summary.seconds:.1f}s")
        click.echo(
            f"  groups {c.get('groups', 0)} ({verb} {c.get('groups_created', 0)}{adopted}); "
            f"people "
            f"{verb} {c.get('people_created', 0)}, given their Okta id "
            f"{c.get('people_linked', 0)}, refused {c.get('people_refused', 0)}; memberships "
            f"{'to add' if dry_run else 'added'} {c.get('memberships_changed', 0)}"
        )
        click.echo(f"  {summary.requests} requests to Okta, {c.get('pages', 0)} pages of members")
    if summary.status != "succeeded":
        _fail(
            f"okta import failed: {summary.error}"
            + ("" if dry_run else "; run `provisioning okta import` again to resume it")
        )


@okta.command("runs")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def okta_runs(ctx: Context, limit: int, as_json: bool) -> None:
    """Recent reconciliation and catch-up runs."""
    from provisioning.okta import runs

    records = [runs.as_json(r) for r in runs.recent(ctx.migrated(), limit)]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        click.echo(
            f"{r['id']:>5} {r['kind']:<10} {r['mode'] or '':<12} {r['status']:<10} "
            f"{r['started_at'][:19]} requests {r['requests']:<6} "
            + ", ".join(f"{k} {v}" for k, v in r["counts"].items())
            + (f" error: {r['error']}" if r["error"] else "")
        )


@main.group("requests")
def requests_group() -> None:
    """Access requests: which connectors take them, and the requests made (people ask and
    decide over /api/v1/requests, as themselves)."""


def _requestable(session: Any, slug: str) -> Any:
    from sqlalchemy import select

    from provisioning.connectors.models import Connector

    connector = session.scalar(select(Connector).where(Connector.slug == slug))
    if connector is None:
        _fail(f"no connector {slug}")
    return connector


@requests_group.command("policy")
@click.argument("slug")
@click.option(
    "--approvers",
    default="owner",
    show_default=True,
    help="The approval chain, in order: owner, manager, owner,manager or manager,owner.",
)
@click.option("--max-days", type=int, required=True, help="Longest access a request may ask.")
@click.option("--decide-within-days", type=int, default=7, show_default=True)
@click.option("--remove", is_flag=True, help="Stop taking requests for the connector.")
@pass_context
def requests_policy(
    ctx: Context,
    slug: str,
    approvers: str,
    max_days: int,
    decide_within_days: int,
    remove: bool,
) -> None:
    """Make connector SLUG requestable (or, with --remove, no longer)."""
    from provisioning.requests import workflow

    with _transaction(ctx) as session:
        connector = _requestable(session, slug)
        try:
            if remove:
                workflow.remove_policy(session, ctx.origin(), connector)
            else:
                workflow.set_policy(
                    session,
                    ctx.origin(),
                    connector,
                    approvers=[a.strip() for a in approvers.split(",") if a.strip()],
                    max_days=max_days,
                    decide_within_days=decide_within_days,
                )
        except workflow.RequestError as exc:
            _fail(str(exc))
    click.echo(f"connector {slug}: " + ("takes no requests" if remove else "requestable"), err=True)


@requests_group.command("list")
@click.option(
    "--state", type=click.Choice(["pending", "approved", "denied", "expired", "cancelled"])
)
@pass_context
def requests_list(ctx: Context, state: str | None) -> None:
    """The requests (newest first, at most 500) as JSON lines."""
    from sqlalchemy import select

    from provisioning.connectors.models import Connector
    from provisioning.requests.models import AccessRequest

    with ctx.migrated().reader() as session:
        statement = (
            select(AccessRequest, Connector.slug)
            .join(Connector, Connector.id == AccessRequest.connector_id)
            .order_by(AccessRequest.id.desc())
            .limit(500)
        )
        if state:
            statement = statement.where(AccessRequest.state == state)
        for request, slug in session.execute(statement):
            click.echo(
                json.dumps(
                    {
                        "id": request.id,
                        "user_id": str(request.user_id),
                        "requested_by": request.requested_by,
                        "connector": slug,
                        "access_level": str(request.access_level),
                        "state": str(request.state),
                        "stage": request.stage,
                        "approvers": request.approvers,
                        "deadline": request.deadline.isoformat(),
                        "expires_at": request.expires_at.isoformat()
                        if request.expires_at
                        else None,
                    }
                )
            )


def _moment(value: str | None, option: str) -> Any:
    """An ISO 8601 time with its offset (whose time it is must be said), or exit 2."""
    if value is None:
        return None
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        _fail(f"{option}: an ISO 8601 time with its offset, e.g. 2027-01-31T00:00:00Z", 2)
    return moment


@main.group("exceptions")
def exceptions_group() -> None:
    """Manual exceptions: access to a connector outside any group (made over the API)."""


@exceptions_group.command("list")
@click.option("--user", help="The person: our id, Okta id, userName or email.")
@click.option("--connector", help="The connector's slug.")
@click.option(
    "--state",
    type=click.Choice(["active", "expired", "revoked", "all"]),
    default="active",
    show_default=True,
)
@click.option("--expires-before", help="Expiring before this time (ISO 8601, with offset).")
@click.option("--expires-after", help="Expiring at or after this time (ISO 8601, with offset).")
@click.option("--created-by", help="The actor who created it, as the audit log names them.")
@pass_context
def exceptions_list(
    ctx: Context,
    user: str | None,
    connector: str | None,
    state: str,
    expires_before: str | None,
    expires_after: str | None,
    created_by: str | None,
) -> None:
    """The exceptions these filters pick, by id, as JSON lines (as GET /api/v1/exceptions
    answers them)."""
    from provisioning.api.grants import exception_out
    from provisioning.database import utcnow
    from provisioning.entitlements import exceptions
    from provisioning.entitlements.models import ManualException

    criteria = exceptions.ExceptionFilter(
        user=user,
        connector=connector,
        state=None if state == "all" else exceptions.ExceptionState(state),
        expires_before=_moment(expires_before, "--expires-before"),
        expires_after=_moment(expires_after, "--expires-after"),
        created_by=created_by,
    )
    with ctx.migrated().reader() as session:
        statement = exceptions.listed(criteria, utcnow()).order_by(ManualException.id)
        for row in session.execute(statement):
            click.echo(exception_out(row).model_dump_json())


@main.group("reviews")
def reviews_group() -> None:
    """Access reviews (opened, decided and closed over /api/v1/reviews)."""


@reviews_group.command("lift")
@click.argument("review_id", type=int)
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="Why the revocation no longer holds (audited).")
@pass_context
def reviews_lift(ctx: Context, review_id: int, item_id: int, reason: str) -> None:
    """Lift the revocation closed review REVIEW_ID applied to its item ITEM_ID: the engine
    gives back what mappings and exceptions still justify."""
    from provisioning.reviews import campaigns
    from provisioning.reviews.models import ReviewItem

    with _transaction(ctx) as session:
        item = session.get(ReviewItem, item_id)
        if item is None or item.campaign_id != review_id:
            _fail(f"no item {item_id} in review campaign {review_id}")
        try:
            _, diff = campaigns.lift(session, ctx.origin(), item, reason)
        except campaigns.ReviewError as exc:
            _fail(f"{exc}; nothing was written")
    for change in diff.created:
        click.echo(f"granted again: connector {change.connector_id} ({change.access_level})")
    click.echo(f"review {review_id} item {item_id}: revocation lifted", err=True)


@main.group()
def mappings() -> None:
    """Group to connector mappings."""


@mappings.command("add")
@click.option(
    "--okta-group", required=True, help="An Okta group: its id (00g...) or its exact name."
)
@click.option("--connector", required=True, help="The connector's slug.")
@click.option(
    "--level",
    "access_level",
    required=True,
    type=click.Choice(["read", "read_write", "interactive"]),
)
@click.option("--action", "actions", multiple=True, help="Only this action (repeatable).")
@click.option("--description", default=None)
@click.option(
    "--dry-run", is_flag=True, help="Who would gain what, who would break a rule; write nothing."
)
@click.option(
    "--confirm-violations",
    is_flag=True,
    help="Map although members would break a separation-of-duties rule (needs --reason).",
)
@click.option("--reason", default=None, help="Why the violations are accepted.")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON on stdout.")
@pass_context
def mappings_add(
    ctx: Context,
    okta_group: str,
    connector: str,
    access_level: str,
    actions: tuple[str, ...],
    description: str | None,
    dry_run: bool,
    confirm_violations: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Map an Okta group to a connector: the group is looked up in Okta, recorded under its
    Okta id, its members brought in as reconciliation brings them, then mapped. A mapping
    that makes members break a separation-of-duties rule is refused, listing them, unless
    --confirm-violations with a --reason (audited; the violations stay open findings)."""
    from pydantic import ValidationError

    from provisioning.api import schemas
    from provisioning.api.mappings import map_okta_group, violations_out
    from provisioning.entitlements.mappings import MappingError, SeparationViolations
    from provisioning.okta.client import OktaError
    from provisioning.okta.groups import GroupLookupError

    try:
        body = schemas.MappingIn(
            okta_group=okta_group,
            connector=connector,
            access_level=access_level,
            actions=list(actions) or None,
            description=description,
            confirm_violations=confirm_violations,
            reason=reason,
        )
    except ValidationError as exc:
        _fail(str(exc), 2)
    database = ctx.migrated()
    client = _okta(ctx)
    try:
        result = map_okta_group(
            database, client, body, ctx.origin(), dry_run=dry_run, settings=ctx.settings
        )
    except GroupLookupError as exc:
        for candidate in exc.candidates:
            click.echo(f"  {candidate['id']}  {candidate['name']}", err=True)
        _fail(str(exc))
    except SeparationViolations as exc:
        for v in violations_out(exc.violations):
            click.echo(_violation_line(v), err=True)
        _fail(f"{exc}; nothing was written")
    except (MappingError, OktaError) as exc:
        _fail(f"{exc}; nothing was written")
    finally:
        client.close()
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    okta = result.okta_group
    assert okta is not None
    held = "held already" if okta.adopted else "new here"
    click.echo(f"Okta group {okta.id} ({okta.name}, {held}): {okta.members} members in Okta")
    for name in okta.people_added:
        click.echo(f"  new person: {name}")
    for verb, items in (("gains", result.gain), ("loses", result.lose), ("changes", result.change)):
        for item in items:
            click.echo(f"  {item.user_name} {verb} {item.connector} ({item.access_level})")
    for v in result.violations:
        click.echo(_violation_line(v))
    if result.violations_total > len(result.violations):
        click.echo(f"  ... {result.violations_total} violations in all")
    if result.confirmation_needed:
        click.echo("a commit needs --confirm-violations and a --reason", err=True)
    if result.dry_run:
        click.echo("dry run: nothing written", err=True)
    else:
        assert result.mapping is not None
        click.echo(f"mapping {result.mapping.id} created: {okta.name} -> {connector}")


def _violation_line(v: Any) -> str:
    held = ", ".join(v.held) or "nothing yet"
    return f"  {v.user_name} breaks rule {v.rule!r}: held {held}, gains {', '.join(v.new)}"


@main.command()
@pass_context
def demo(ctx: Context) -> None:
    """Seed a small realistic organisation and print what was created."""
    from provisioning import demo as seed
    from provisioning.connectors.governance import GovernanceError

    with _transaction(ctx) as session:
        try:
            report = seed.seed(session, ctx.origin("demo seed"))
        except GovernanceError as exc:
            _fail(str(exc))
    click.echo(report)


if __name__ == "__main__":
    main()
