"""The `provisioning` command: tokens, audit, demo, serve, and clear failures on bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from provisioning.audit.models import AuditEvent
from provisioning.cli import main
from provisioning.tokens import credentials
from provisioning.tokens.models import ApiToken


def run(database, *args: str, **env: str):
    environment = {"DATABASE_URL": database.url, **env}
    return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)


def test_token_create_prints_only_the_secret_and_stores_its_hash(database):
    result = run(database, "token", "create", "--name", "okta-scim", "--scope", "scim:provision")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov_")
    secret = lines[0]
    with database.reader() as session:
        token = session.scalar(select(ApiToken))
        assert token.name == "okta-scim" and token.scopes == ["scim:provision"]
        assert secret not in token.secret_hash
        principal = credentials.authenticate(session, secret)
        assert principal.name == "okta-scim"
        assert principal.scopes == frozenset({"scim:provision"})
        assert credentials.authenticate(session, secret + "x") is None
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "token.created"))
        assert secret not in json.dumps(event.after)


def test_duplicate_token_name_fails_and_writes_nothing(database):
    assert (
        run(database, "token", "create", "--name", "hr", "--scope", "offboarding:write").exit_code
        == 0
    )
    result = run(database, "token", "create", "--name", "hr", "--scope", "admin:read")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "already exists" in result.stderr
    with database.reader() as session:
        assert session.scalar(select(func.count(ApiToken.id))) == 1
        assert session.scalar(select(func.count(AuditEvent.id))) == 1


def test_unknown_scope_is_refused(database):
    result = run(database, "token", "create", "--name", "x", "--scope", "root")
    assert result.exit_code == 2
    assert "root" in result.stderr


def test_revoked_token_no_longer_authenticates(database):
    secret = run(database, "token", "create", "--name", "gw", "--scope", "decisions:check").stdout
    assert run(database, "token", "revoke", "gw").exit_code == 0
    with database.reader() as session:
        assert credentials.authenticate(session, secret.strip()) is None
    again = run(database, "token", "revoke", "gw")
    assert again.exit_code == 1 and "already revoked" in again.stderr
    missing = run(database, "token", "revoke", "nobody")
    assert missing.exit_code == 1 and "no token named" in missing.stderr


def test_bad_setting_names_the_setting(database):
    result = run(database, "db", "upgrade", PROVISIONING_LOG_LEVEL="loud")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid setting PROVISIONING_LOG_LEVEL")
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": "mysql://x"})
    assert result.exit_code == 2
    assert "invalid setting DATABASE_URL" in result.stderr


def test_unreachable_database_is_one_clear_line_without_the_password():
    url = "postgresql://admin:hunter2@127.0.0.1:9/nowhere"
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot use the database at")
    assert "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_then_verify(database):
    result = run(database, "demo")
    assert result.exit_code == 0, result.stderr
    assert "github" in result.stdout and "leaver.lee@example.com" in result.stdout
    verify = run(database, "audit", "verify")
    assert verify.exit_code == 0
    assert verify.stdout.startswith("audit chain intact")
    # Seeding again creates nothing.
    with database.reader() as session:
        events = session.scalar(select(func.count(AuditEvent.id)))
    assert "already present" in run(database, "demo").stdout
    with database.reader() as session:
        assert session.scalar(select(func.count(AuditEvent.id))) == events
    exported = run(database, "audit", "export")
    assert len(exported.stdout.splitlines()) == events


def test_verify_fails_naming_the_first_broken_event(database):
    assert run(database, "demo").exit_code == 0
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE id = 7"))
        if database.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    result = run(database, "audit", "verify")
    assert result.exit_code == 1
    assert "broken at event 7" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(databases):
    """`provisioning serve` on an empty database, as a real process on 127.0.0.1."""
    database = databases.empty()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database.url}
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            get(base + "/healthz")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"serve did not start: {process.stderr.read().decode()}")
            time.sleep(0.1)
    yield base, database
    process.terminate()
    process.wait(timeout=10)
    database.dispose()


def test_serve_migrates_then_answers_health_and_readiness(served):
    base, database = served
    assert get(base + "/healthz") == (200, {"status": "ok"})
    status, body = get(base + "/readyz")
    assert status == 200
    assert body["status"] == "ready" and body["schema"] == database.head()
    assert database.current() == database.head()
