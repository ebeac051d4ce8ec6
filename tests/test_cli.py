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


def test_token_list_shows_names_scopes_person_and_use_but_no_secret(database, origin):
    """`token list`: what each token may do, whom it speaks for, when it was last used
    (an API call records it, once a minute at most); never its secret or hash."""
    from provisioning.settings import load
    from provisioning.web.app import create_app
    from tests.org import Org

    with database.transaction() as session:
        Org(session, origin).user("ada@example.com")
    gateway = run(database, "token", "create", "--name", "gw", "--scope", "decisions:check")
    admin = run(
        database,
        "token",
        "create",
        "--name",
        "ada",
        "--scope",
        "admin:read",
        "--scope",
        "requests:write",
        "--person",
        "ada@example.com",
    )
    assert run(database, "token", "create", "--name", "old", "--scope", "audit:read").exit_code == 0
    assert run(database, "token", "revoke", "old").exit_code == 0
    okta = run(database, "token", "create", "--name", "okta", "--scope", "scim:provision")
    secrets = [gateway.stdout.strip(), admin.stdout.strip(), okta.stdout.strip()]

    client = create_app(load(database_url=database.url), database).test_client()
    for _ in range(3):
        answer = client.get("/api/v1/connectors", headers={"Authorization": f"Bearer {secrets[1]}"})
        assert answer.status_code == 200
    scim = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {secrets[2]}"})
    assert scim.status_code == 200
    with database.reader() as session:
        tokens = {t.name: t for t in session.scalars(select(ApiToken))}
    assert tokens["gw"].last_used_at is None
    first_use = tokens["ada"].last_used_at
    assert first_use is not None and tokens["okta"].last_used_at is not None

    listed = run(database, "token", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["scopes"], r["person"]) for r in rows] == [
        ("ada", ["admin:read", "requests:write"], "ada@example.com"),
        ("gw", ["decisions:check"], None),
        ("okta", ["scim:provision"], None),
    ]
    assert rows[0]["last_used_at"] == first_use.isoformat(timespec="seconds")
    assert rows[1]["last_used_at"] is None and rows[1]["created_at"]

    table = run(database, "token", "list", "--all").stdout
    assert table.splitlines()[0].split() == [
        "NAME",
        "SCOPES",
        "PERSON",
        "CREATED",
        "LAST",
        "USED",
        "REVOKED",
    ]
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["ada", "gw", "okta", "old"]
    hashes = [t.secret_hash for t in tokens.values()]
    for shown in (listed.stdout, table):
        assert not any(secret in shown or secret[5:20] in shown for secret in secrets)
        assert not any(digest[:16] in shown for digest in hashes)


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


# -- audit checkpoints -------------------------------------------------------


@pytest.fixture
def signing_key(tmp_path):
    """An Ed25519 key in a file, as PROVISIONING_AUDIT_SIGNING_KEY would name it."""
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519")
    path = tmp_path / "audit-signing.pem"
    path.write_bytes(key.as_pem(private=True))
    return key, str(path)


def test_checkpoint_then_verify_it_with_the_public_key_alone(database, signing_key, tmp_path):
    key, path = signing_key
    assert run(database, "demo").exit_code == 0
    out = tmp_path / "held" / "first.jws"
    out.parent.mkdir()
    made = run(database, "audit", "checkpoint", "-o", str(out), PROVISIONING_AUDIT_SIGNING_KEY=path)
    assert made.exit_code == 0, made.stderr
    with database.reader() as session:
        events = session.scalar(select(func.count(AuditEvent.id)))
    assert f"checkpoint at event {events}" in made.stderr
    public = run(database, "audit", "public-key", PROVISIONING_AUDIT_SIGNING_KEY=path)
    assert json.loads(public.stdout)["kid"] == key.thumbprint()
    pem = run(database, "audit", "public-key", "--pem", PROVISIONING_AUDIT_SIGNING_KEY=path)
    assert pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in public.stdout + pem.stdout
    # A second checkpoint on stdout, into the same directory; then more events.
    second = run(database, "audit", "checkpoint", PROVISIONING_AUDIT_SIGNING_KEY=path)
    (out.parent / "second.jws").write_text(second.stdout)
    assert run(database, "token", "create", "--name", "n", "--scope", "admin:read").exit_code == 0
    for public_key in (public.stdout.strip(), pem.stdout):
        verified = run(
            database, "audit", "verify", "--checkpoint", str(out.parent), "--public-key", public_key
        )
        assert verified.exit_code == 0, verified.stderr
        assert f"holds 2 checkpoints; the latest at event {events}" in verified.stdout


def test_verify_names_a_tail_cut_behind_the_triggers_back(database, signing_key, tmp_path):
    from tests.audit.dba import bypassing_triggers, cut

    _, path = signing_key
    assert run(database, "demo").exit_code == 0
    held = tmp_path / "checkpoint.jws"
    run(database, "audit", "checkpoint", "-o", str(held), PROVISIONING_AUDIT_SIGNING_KEY=path)
    with database.reader() as session:
        events = session.scalar(select(func.count(AuditEvent.id)))
    with bypassing_triggers(database) as conn:
        cut(conn, after=events - 2)
    assert run(database, "audit", "verify").exit_code == 0  # consistent, on its own
    result = run(
        database,
        "audit",
        "verify",
        "--checkpoint",
        str(held),
        **{"PROVISIONING_AUDIT_SIGNING_KEY": path},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: audit chain broken at event {events - 1}: ")
    assert f"checkpoint {held}:1 names event {events}" in result.stderr


def test_verify_refuses_a_checkpoint_signed_with_another_key(database, signing_key, tmp_path):
    from joserfc.jwk import OKPKey

    _, path = signing_key
    other = tmp_path / "other.pem"
    other.write_bytes(OKPKey.generate_key("Ed25519").as_pem(private=True))
    held = tmp_path / "forged.jws"
    made = run(
        database, "audit", "checkpoint", "-o", str(held), PROVISIONING_AUDIT_SIGNING_KEY=str(other)
    )
    assert made.exit_code == 0
    result = run(
        database, "audit", "verify", "--checkpoint", str(held), PROVISIONING_AUDIT_SIGNING_KEY=path
    )
    assert result.exit_code == 1
    assert f"checkpoint {held}:1 refused" in result.stderr and "signature" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "checkpoint"], "PROVISIONING_AUDIT_SIGNING_KEY is not set"),
        (["audit", "public-key"], "PROVISIONING_AUDIT_SIGNING_KEY is not set"),
        (["audit", "verify", "--checkpoint", "HELD"], "no key to verify checkpoints"),
        (["audit", "verify", "--checkpoint", "EMPTY", "--public-key", "KEY"], "no checkpoint in"),
        (["audit", "verify", "--checkpoint", "HELD", "--public-key", "nope"], "--public-key: "),
    ],
)
def test_checkpoint_commands_without_what_they_need_exit_2(
    database, tmp_path, signing_key, args, message
):
    held, empty = tmp_path / "held.jws", tmp_path / "empty"
    held.write_text("x.y.z\n")
    empty.mkdir()
    names = {"HELD": str(held), "EMPTY": str(empty), "KEY": signing_key[1]}
    result = run(database, *[names.get(a, a) for a in args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_garbled_checkpoint_file_is_refused_naming_its_line(database, signing_key, tmp_path):
    held = tmp_path / "held.jws"
    held.write_bytes(b"\n\xff\xfe not a checkpoint\n")
    result = run(
        database, "audit", "verify", "--checkpoint", str(held), "--public-key", signing_key[1]
    )
    assert result.exit_code == 1
    assert f"checkpoint {held}:2 refused: malformed" in result.stderr


def test_requests_policy_and_list_and_a_token_bound_to_a_person(database, origin):
    import json as json_

    from provisioning.requests import workflow
    from provisioning.requests.models import RequestPolicy
    from provisioning.tokens.models import ApiToken
    from tests.org import Org

    with database.transaction() as session:
        org = Org(session, origin)
        org.user("olga@example.com")
        ada = org.user("ada@example.com")
        org.connector("github", owner="olga@example.com")
    made = run(database, "requests", "policy", "github", "--approvers", "owner", "--max-days", "5")
    assert made.exit_code == 0, made.output
    bad = run(database, "requests", "policy", "github", "--approvers", "cfo", "--max-days", "5")
    assert bad.exit_code != 0 and "approvers" in bad.output
    with database.reader() as session:
        assert session.get(RequestPolicy, 1).approvers == ["owner"]
    token = run(
        database,
        "token",
        "create",
        "--name",
        "ada",
        "--scope",
        "requests:write",
        "--person",
        "ADA@example.com",
    )
    assert token.exit_code == 0, token.output
    nobody = run(
        database, "token", "create", "--name", "x", "--scope", "requests:write", "--person", "zed"
    )
    assert nobody.exit_code != 0
    with database.transaction() as session:
        assert session.scalar(select(ApiToken.user_id).where(ApiToken.name == "ada")) == ada.id
        from provisioning.connectors.models import Connector
        from provisioning.identity.models import User

        workflow.create(
            session,
            origin,
            session.get(User, ada.id),
            session.get(User, ada.id),
            session.scalar(select(Connector).where(Connector.slug == "github")),
            "read",
            justification="x",
            duration_days=2,
        )
    listed = run(database, "requests", "list", "--state", "pending")
    (line,) = listed.output.splitlines()
    assert json_.loads(line)["connector"] == "github"
    removed = run(database, "requests", "policy", "github", "--max-days", "1", "--remove")
    assert removed.exit_code == 0


def test_help_imports_no_more_than_the_commands():
    """`provisioning --help` loads click and the command modules, nothing of the domain
    (it took seconds when it did: docs/performance.md)."""
    script = (
        "import sys\n"
        "from provisioning.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('provisioning', 'jobs', 'scim', 'sqlalchemy', 'okta', 'pydantic', 'flask')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.strip().splitlines()[-1]
    commands = [  # the command modules the entry points name, with their packages
        "jobs",
        "jobs.cli",
        "provisioning",
        "provisioning.cli",
        "provisioning.integrations",
        "provisioning.integrations.mcp_gateway",
        "provisioning.integrations.mcp_gateway.commands",
    ]
    assert loaded == str(commands), loaded


def test_exceptions_list_and_a_review_revocation_lifted(database, origin):
    import datetime as dt

    from provisioning.database import utcnow
    from provisioning.entitlements.mappings import create_exception, create_mapping
    from provisioning.entitlements.models import Grant
    from provisioning.reviews.models import ReviewItem
    from tests.org import Org, closed_review

    with database.transaction() as session:
        org = Org(session, origin)
        ada, bob = org.user("ada@example.com"), org.user("bob@example.com")
        github, slack = org.connector("github"), org.connector("slack")
        group = org.group("eng")
        create_mapping(session, origin, group, slack, "read")
        org.join(bob, group)
        exception, _ = create_exception(
            session,
            origin,
            ada,
            github,
            "read",
            justification="incident",
            expires_at=utcnow() + dt.timedelta(days=3),
        )
        campaign = closed_review(session, origin, [slack.id])
        item_id = session.scalar(select(ReviewItem.id).where(ReviewItem.user_id == bob.id))
        campaign_id, bob_id = campaign.id, bob.id
    listed = run(database, "exceptions", "list", "--user", "ADA@example.com")
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    assert json.loads(line)["id"] == exception.id and json.loads(line)["state"] == "active"
    assert run(database, "exceptions", "list", "--state", "expired").output == ""
    soon = (utcnow() + dt.timedelta(days=1)).isoformat()
    assert run(database, "exceptions", "list", "--expires-before", soon).output == ""
    naive = run(database, "exceptions", "list", "--expires-before", "2027-01-01T00:00:00")
    assert naive.exit_code == 2 and "offset" in naive.output

    blank = run(database, "reviews", "lift", str(campaign_id), str(item_id), "--reason", " ")
    assert blank.exit_code != 0 and "reason" in blank.output
    wrong = run(database, "reviews", "lift", str(campaign_id + 1), str(item_id), "--reason", "x")
    assert wrong.exit_code != 0
    lifted = run(
        database, "reviews", "lift", str(campaign_id), str(item_id), "--reason", "back on call"
    )
    assert lifted.exit_code == 0, lifted.output
    with database.reader() as session:
        live = select(Grant.id).where(Grant.user_id == bob_id, Grant.revoked_at.is_(None))
        assert session.scalar(live) is not None
    again = run(database, "reviews", "lift", str(campaign_id), str(item_id), "--reason", "x")
    assert again.exit_code != 0 and "lifted already" in again.output
