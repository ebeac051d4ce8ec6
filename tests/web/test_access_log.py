"""Credentials in query strings never reach the logs: gunicorn's access log and the
service's own."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.settings import load
from provisioning.web import logs
from provisioning.web.app import create_app

SENSITIVE_NAMES = [
    "access_token",
    "ACCESS_TOKEN",
    "access%5Ftoken",
    "token",
    "key",
    "api_key",
    "api-key",
    "client_secret",
    "secret",
    "password",
    "Password",
    "code",
    "id_token",
    "refresh_token",
]
PLAIN_NAMES = ["limit", "cursor", "q", "state", "monkey", "tokens", "keyboard", "x"]
VALUES = st.text(
    alphabet=st.characters(exclude_characters="&;#", exclude_categories=("Cs",)),
    max_size=12,
).map(quote)


@settings(max_examples=300, deadline=None)
@given(
    parameters=st.lists(
        st.tuples(st.booleans(), st.sampled_from(SENSITIVE_NAMES + PLAIN_NAMES), VALUES),
        max_size=8,
    ),
    separators=st.lists(st.sampled_from("&;"), min_size=8, max_size=8),
)
def test_no_credential_of_a_query_string_is_logged(parameters, separators):
    secrets, parts = [], []
    for index, (_, name, value) in enumerate(parameters):
        if name in SENSITIVE_NAMES:
            value = f"SECRET{index}x{value}"
            secrets.append(value)
        parts.append(f"{name}={value}")
    query = "".join(part + sep for part, sep in zip(parts, separators, strict=False))
    redacted = logs.redact_query(query)
    for secret in secrets:
        assert secret not in redacted
    kept = [p for p in parts if p.partition("=")[0] in PLAIN_NAMES]
    for part in kept:
        assert part in redacted
    assert redacted.count(logs.REDACTED) == len(secrets)


def test_a_target_keeps_its_path_and_loses_its_credentials():
    assert (
        logs.redact_target("/api/v1/users?access_token=abc&limit=5")
        == "/api/v1/users?access_token=[redacted]&limit=5"
    )
    assert logs.redact_target("/healthz") == "/healthz"
    assert logs.redact_target("https://idp/cb?code=xyz#s") == "https://idp/cb?code=[redacted]#s"


def wait_for(served, text: str) -> str:
    deadline = time.monotonic() + 10
    while text not in (log := served.log_text()):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.05)
    return log


def test_the_production_log_holds_no_credential_and_is_json_lines(served):
    connection = served.connect()
    connection.request(
        "GET",
        "/api/v1/connectors?access_token=SECRET-QUERY-1&limit=5&client_secret=SECRET-QUERY-2",
        headers={
            "Referer": "https://console.example/cb?code=SECRET-REFERER",
            "X-Request-ID": "edge-test-query-secrets",
        },
    )
    response = connection.getresponse()
    response.read()
    # A credential in the query string is no credential: only the Authorization header is.
    assert response.status == 401
    assert response.getheader("X-Request-ID") == "edge-test-query-secrets"
    log = wait_for(served, "edge-test-query-secrets")
    assert "SECRET-" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    (line,) = [x for x in lines if x["request_id"] == "edge-test-query-secrets"]
    assert line["logger"] == "provisioning.requests" and line["level"] == "INFO"
    assert line["route"] == "/api/v1/connectors" and line["status"] == 401
    assert (
        line["path"]
        == "/api/v1/connectors?access_token=[redacted]&limit=5&client_secret=[redacted]"
    )
    assert line["duration_ms"] >= 0 and line["actor"] is None and line["time"]


def test_an_access_log_turned_on_holds_no_credential():
    """gunicorn's access log is off in deploy/gunicorn.conf.py; turned on, it redacts."""
    from gunicorn.config import Config

    from provisioning.web.logs import AccessLogger

    config = Config()
    config.set("accesslog", "-")
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/v1/connectors?access_token=SECRET-1&limit=5",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "QUERY_STRING": "access_token=SECRET-1&limit=5",
        "HTTP_REFERER": "https://console.example/cb?code=SECRET-REFERER",
    }

    class Answer:
        status = "401 Unauthorized"
        headers = ()
        sent = 0
        response_length = 0

    class Request:
        headers = (("AUTHORIZATION", "Bearer SECRET-BEARER"),)

    atoms = AccessLogger(config).atoms(Answer(), Request(), environ, dt.timedelta(seconds=0.01))
    assert "SECRET" not in json.dumps(atoms, default=str)
    assert atoms["r"] == "GET /api/v1/connectors?access_token=[redacted]&limit=5 HTTP/1.1"
    assert atoms["f"] == "https://console.example/cb?code=[redacted]"
    assert atoms["{authorization}i"] == "[redacted]"


def test_the_services_own_log_of_an_unhandled_error_holds_no_credential(database, caplog):
    app = create_app(load(database_url=database.url), database, background=False)

    def fails():
        raise RuntimeError("boom")

    app.add_url_rule("/fails", "fails", fails)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/fails?token=SECRET-OWN&limit=1")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    messages = [record.getMessage() for record in caplog.records]
    assert "unhandled error in GET /fails?token=[redacted]&limit=1" in messages
    assert "SECRET-OWN" not in caplog.text


def test_an_unhandled_error_under_scim_is_a_scim_error_and_logged_without_credentials(
    tmp_path, caplog
):
    from provisioning.database import Database

    broken = Database(f"sqlite:///{tmp_path}/missing-directory/none.db")
    app = create_app(load(database_url=broken.url), broken, background=False)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get(
            "/scim/v2/Users?access_token=SECRET-SCIM", headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 500
    assert response.mimetype == "application/scim+json"
    assert response.get_json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    messages = [record.getMessage() for record in caplog.records]
    assert "unhandled error in GET /scim/v2/Users?access_token=[redacted]" in messages
    assert "SECRET-SCIM" not in caplog.text


@pytest.mark.parametrize("accesslog, lines", [(None, 0), ("-", 1)])
def test_no_access_line_beside_the_request_line_unless_asked(accesslog, lines, caplog):
    """The defect: with a ``logconfig_dict`` (``provisioning serve``, deploy/gunicorn.conf.py)
    gunicorn wrote its own access line for every request, beside the service's request
    line, even with ``accesslog = None``."""
    from gunicorn.config import Config

    from provisioning.logs import gunicorn_config
    from provisioning.web.logs import AccessLogger

    config = Config()
    config.set("logconfig_dict", gunicorn_config("INFO", "json"))
    config.set("accesslog", accesslog)
    logger = AccessLogger(config)
    logger.access_log.addHandler(caplog.handler)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/healthz", "SERVER_PROTOCOL": "HTTP/1.1"}

    class Answer:
        status = "200 OK"
        headers = ()
        sent = 0
        response_length = 0

    class Request:
        headers = ()

    try:
        logger.access(Answer(), Request(), environ, dt.timedelta(seconds=0.01))
    finally:
        logger.access_log.removeHandler(caplog.handler)
    access = [record for record in caplog.records if record.name == "gunicorn.access"]
    assert len(access) == lines
