"""Plain-http Okta org URLs: only with PROVISIONING_OKTA_ALLOW_HTTP, refused in one line otherwise.

The okta SDK insists on https unless a variable of its own is in the
environment. The service's setting is the only switch: without it an
``http://`` org URL stops every command at start (exit status 2, one line
naming the setting, no traceback); with it, reconciliation talks to the local
Okta-compatible server, and the SDK's variable is not left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from provisioning.cli import main
from provisioning.okta.client import OktaClient, OktaError
from provisioning.settings import SettingsError, load
from tests.okta.okta_server import TOKEN
from tests.org import holders, mapped_okta_group

SDK_SWITCH = "OKTA_TESTING_TESTINGDISABLEHTTPSCHECK"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed command in a process of its own, without the SDK's own switch."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OKTA_", "PROVISIONING_"))}
    return subprocess.run(
        [sys.executable, "-c", "from provisioning.cli import main; main()", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_http_org_url_without_the_setting_is_refused_in_one_line(database, okta):
    env = {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": okta.url,
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
    }
    result = run_cli("reconcile", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "PROVISIONING_OKTA_ORG_URL" in line and "PROVISIONING_OKTA_ALLOW_HTTP" in line
    # Every command reads the settings at start, and stops there.
    for command in (["okta", "catch-up"], ["okta", "runs"]):
        refused = CliRunner().invoke(main, command, env=env)
        assert refused.exit_code == 2 and isinstance(refused.exception, SystemExit)
        assert refused.stderr.strip() == line
    assert okta.state.requests["total"] == 0


def test_with_the_setting_the_cli_reconciles_against_a_local_server(
    database, origin, okta, monkeypatch
):
    monkeypatch.delenv(SDK_SWITCH, raising=False)
    eng = okta.state.add_group("eng")
    ada = okta.state.add_user("ada@example.com")
    okta.state.add_member(eng["id"], ada["id"])
    mapped_okta_group(database, origin, eng["id"])
    env = {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": okta.url,
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
        "PROVISIONING_OKTA_ALLOW_HTTP": "true",
    }
    result = CliRunner().invoke(main, ["reconcile"], env=env)
    assert result.exit_code == 0, result.output
    assert holders(database) == {ada["id"]}
    assert SDK_SWITCH not in os.environ  # set for the SDK's check only, then taken back


def test_the_setting_is_checked_when_the_settings_load():
    with pytest.raises(SettingsError) as refused:
        load(okta_org_url="http://okta.internal:8080")
    message = str(refused.value)
    assert "PROVISIONING_OKTA_ORG_URL" in message and "PROVISIONING_OKTA_ALLOW_HTTP" in message
    assert "\n" not in message
    assert load(okta_org_url="http://okta.internal:8080", okta_allow_http=True).okta_allow_http
    assert not load(okta_org_url="https://example.okta.com").okta_allow_http
    with pytest.raises(SettingsError, match="PROVISIONING_OKTA_ALLOW_HTTP"):
        load(okta_allow_http="maybe")


def test_the_client_follows_its_own_switch_only(okta, monkeypatch):
    monkeypatch.delenv(SDK_SWITCH, raising=False)
    eng = okta.state.add_group("eng")
    allowed = OktaClient(okta.url, api_token=TOKEN, allow_http=True)
    try:
        assert allowed.group(eng["id"])["profile"]["name"] == "eng"
    finally:
        allowed.close()
    assert SDK_SWITCH not in os.environ
    # The first client's switch did not leak into the next one, nor did the SDK's
    # variable, set by someone else, open the door without the setting.
    monkeypatch.setenv(SDK_SWITCH, "true")
    with pytest.raises(OktaError, match="https") as refused:
        OktaClient(okta.url, api_token=TOKEN)
    assert "\n" not in str(refused.value)
    assert os.environ[SDK_SWITCH] == "true"  # put back as it was
    assert okta.state.requests["total"] == 1


def test_an_org_url_the_sdk_refuses_is_one_line_not_a_traceback(database):
    env = {
        "DATABASE_URL": database.url,
        "PROVISIONING_OKTA_ORG_URL": "https://example-admin.okta.com",
        "PROVISIONING_OKTA_API_TOKEN": TOKEN,
    }
    result = CliRunner().invoke(main, ["reconcile"], env=env)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert "-admin" in line
