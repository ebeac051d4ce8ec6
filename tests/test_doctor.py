"""`provisioning doctor`: one verdict a line against real parts, a non-zero exit on a fail."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from provisioning.cli import main
from provisioning.doctor import Verdict, examine
from tests.delivery.conftest import add_target
from tests.okta.okta_server import TOKEN, OktaServer

LOCAL = "127.0.0.1/32"


def doctor(database, **env: str):
    environment = {"DATABASE_URL": database.url, **env}
    result = CliRunner().invoke(main, ["doctor", "--json"], env=environment)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, {line["check"]: (line["verdict"], line["detail"]) for line in lines}


def test_a_database_at_head_passes_and_one_behind_fails_naming_the_fix(databases):
    behind = databases.empty()
    behind.upgrade("0020")
    code, lines = doctor(behind)
    assert code == 1
    verdict, detail = lines["schema"]
    assert (
        verdict == "fail" and "at revision 0020" in detail and "provisioning db upgrade" in detail
    )
    assert lines["database"][0] == "ok" and lines["clock (database)"][0] == "ok"
    assert behind.current() == "0020"  # the doctor never migrates

    behind.upgrade()
    code, lines = doctor(behind)
    assert code == 0, lines
    assert lines["schema"] == ("ok", f"at head ({behind.head()})")
    assert lines["targets"] == ("ok", "none configured")
    assert lines["okta"][0] == "ok" and "not configured" in lines["okta"][1]
    assert all(verdict != "fail" for verdict, _ in lines.values())


def test_an_unreachable_database_and_a_bad_setting_fail_without_the_password():
    url = "postgresql://admin:hunter2@127.0.0.1:9/nowhere"
    result = CliRunner().invoke(main, ["doctor"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    (failed,) = [line for line in result.stdout.splitlines() if line.startswith("fail")]
    assert "database" in failed and "cannot use the database" in failed
    assert "hunter2" not in result.stdout

    result = CliRunner().invoke(
        main, ["doctor"], env={"DATABASE_URL": url, "PROVISIONING_LOG_LEVEL": "loud"}
    )
    assert result.exit_code == 1
    assert result.stdout.startswith("fail  configuration")
    assert "PROVISIONING_LOG_LEVEL" in result.stdout


def test_each_target_is_tried_under_the_egress_policy(database, receiver):
    add_target(database, "webhook", receiver.url, "whsec-test-0123456789", name="up")
    closed = receiver.url.replace(str(receiver.port), "9")
    add_target(database, "webhook", closed, "whsec-test-0123456789", name="closed")
    add_target(
        database,
        "webhook",
        receiver.url + "?key=query-secret",
        "whsec-test-0123456789",
        name="asleep",
        enabled=False,
    )

    code, lines = doctor(database, PROVISIONING_DELIVERY_ALLOWED_NETWORKS=LOCAL)
    assert code == 1
    assert lines["target up"] == ("ok", f"{receiver.url} answers HTTP 401")  # HEAD, unsigned
    verdict, detail = lines["target closed"]
    assert verdict == "fail" and "ConnectError" in detail
    assert lines["target asleep"][0] == "ok" and "disabled" in lines["target asleep"][1]
    assert "query-secret" not in json.dumps(lines)
    assert receiver.received == []  # nothing delivered

    receiver.answer = 503
    _, lines = doctor(database, PROVISIONING_DELIVERY_ALLOWED_NETWORKS=LOCAL)
    assert lines["target up"] == ("warn", f"{receiver.url} answers HTTP 503")

    # Without the operator's word, 127.0.0.1 is not a place delivery may go.
    code, lines = doctor(database)
    assert code == 1
    verdict, detail = lines["target up"]
    assert verdict == "fail" and "egress refused: 127.0.0.1 is a loopback address" in detail


def test_okta_is_reached_with_the_configured_credentials_and_its_clock_read(database):
    with OktaServer() as okta:
        settings = {"PROVISIONING_OKTA_ORG_URL": okta.url, "PROVISIONING_OKTA_ALLOW_HTTP": "true"}
        code, lines = doctor(database, PROVISIONING_OKTA_API_TOKEN=TOKEN, **settings)
        assert code == 0, lines
        assert lines["okta"][0] == "ok" and okta.url in lines["okta"][1]
        assert lines["clock (okta)"][0] == "ok"

        code, lines = doctor(database, PROVISIONING_OKTA_API_TOKEN="00wrong-token", **settings)
        assert code == 1
        verdict, detail = lines["okta"]
        assert verdict == "fail" and "401" in detail
        assert "00wrong-token" not in json.dumps(lines)

        code, lines = doctor(database, **settings)  # an org URL without credentials
        assert code == 1 and lines["okta"][0] == "fail"


@pytest.mark.parametrize(
    ("offset", "verdict"),
    [
        (dt.timedelta(0), Verdict.OK),
        (dt.timedelta(seconds=5), Verdict.WARN),
        (dt.timedelta(minutes=-5), Verdict.FAIL),
    ],
)
def test_a_clock_that_drifts_from_the_databases_is_named(database, monkeypatch, offset, verdict):
    """This host's clock set ``offset`` away from the database's."""
    monkeypatch.setenv("DATABASE_URL", database.url)
    lines = {line.check: line for line in examine(clock=lambda: dt.datetime.now(dt.UTC) + offset)}
    assert lines["clock (database)"].verdict is verdict
    if offset:
        way = "behind" if offset > dt.timedelta(0) else "ahead of"
        assert way in lines["clock (database)"].detail
