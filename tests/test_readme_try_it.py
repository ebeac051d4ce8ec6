"""The README's "Try it", run as written: `provisioning serve` as a real process, the
demo, a token, the five curl calls, an Okta event hook delivery; and its webhook receiver
snippet checked against what the delivery worker actually signs and sends."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select

from provisioning.database import utcnow
from provisioning.delivery import webhook
from provisioning.delivery.egress import Egress
from provisioning.delivery.message import Message
from provisioning.entitlements.models import Mapping
from provisioning.identity.models import User
from tests.test_cli import free_port

README = (Path(__file__).parents[1] / "README.md").read_text()
EXECUTABLE = str(Path(sys.executable).parent / "provisioning")


def blocks(marker: str) -> list[str]:
    """The fenced code blocks between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    found = re.findall(
        rf"<!-- {marker} -->\n```[a-z]*\n(.*?)```\n<!-- /{marker} -->", README, re.DOTALL
    )
    assert found, f"no {marker} block in the README"
    return found


def as_here(command: str, base: str) -> str:
    """A README command for this checkout and port (the README says .venv/ and :8000)."""
    return command.replace(".venv/bin/provisioning", EXECUTABLE).replace(
        "http://127.0.0.1:8000", base
    )


@pytest.fixture
def served(databases, tmp_path):
    """The README's serve command, on a fresh database, on a free port."""
    database = databases.empty()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (serve,) = blocks("try-it-serve")
    env = {**os.environ, "DATABASE_URL": database.url}
    process = subprocess.Popen(
        ["bash", "-c", f"{as_here(serve.strip(), base)} --port {port}"],
        cwd=tmp_path,
        start_new_session=True,  # its own process group, ended as one below
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, "provisioning serve exited"
            assert time.monotonic() < deadline, "provisioning serve never became ready"
            time.sleep(0.2)
        yield database, base, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        database.dispose()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_try_it_blocks_run_as_written(served, tmp_path):
    database, base, env = served
    # Each curl's answer on a line of its own (the README's curl prints none after it).
    script = 'set -euo pipefail\ncurl() { command curl "$@"; echo; }\n'
    script += "\n".join(as_here(block, base) for block in blocks("try-it"))
    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "audit chain intact" in run.stdout
    answers = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    ready, decision, access, dry_run, report, after_hook = answers

    assert ready["status"] == "ready"
    assert decision["decision"] == "needs_approval"
    assert any("merge_pull_request" in reason for reason in decision["reasons"])
    github = next(g for g in access["grants"] if g["connector"] == "github")
    assert access["user"]["user_name"] == "ada.lovelace@example.com"
    assert [s["group"] for s in github["sources"]] == ["eng-platform"]
    assert dry_run["dry_run"] is True
    assert {g["user_name"] for g in dry_run["gain"]} == {
        "alan.kay@example.com",
        "mary.jackson@example.com",
    }
    assert report["state"] == "done" and report["identifier"] == "mary.jackson@example.com"
    assert {r["connector"] for r in report["revoked"]} == {"slack", "confluence"}
    assert after_hook == {"decision": "deny", "reasons": ["user is deactivated"]}

    with database.reader() as session:
        # the dry run wrote nothing: the demo's seven mappings, no warehouse for sales
        assert session.scalar(select(func.count(Mapping.id))) == 7
        people = dict(session.execute(select(User.user_name, User.state)).all())
    assert people["mary.jackson@example.com"] == "offboarded"
    assert people["alan.kay@example.com"] == "deactivated"
    assert people["ada.lovelace@example.com"] == "active"


class Capture(BaseHTTPRequestHandler):
    """A receiver that keeps each request's headers and raw body, and acknowledges."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_receiver_snippet_verifies_what_delivery_signs():
    namespace: dict[str, Any] = {}
    (snippet,) = blocks("webhook-verify")
    exec(compile(snippet, "README.md (webhook-verify)", "exec"), namespace)
    verify = namespace["verify"]

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    secret = "whsec-readme-0123456789"
    sender = webhook.WebhookSender(
        url, secret, timeout=5, egress=Egress((ip_network("127.0.0.1/32"),))
    )
    message = Message(
        id=1,
        event_id=uuid.uuid4(),
        event_type="grant.revoked",
        user_id=uuid.uuid4(),
        payload={"connector": "github", "reason": "offboarded: ünïcode"},
        created_at=utcnow(),
    )
    try:
        sender.send(message)
    finally:
        sender.close()
        server.shutdown()
        server.server_close()
    ((headers, body),) = Capture.received
    signature = headers[webhook.SIGNATURE_HEADER]
    assert headers[webhook.EVENT_ID_HEADER] == str(message.event_id)
    assert verify(secret, signature, body)
    assert not verify(secret, signature, body.replace(b"github", b"gitlab"))
    assert not verify("another-secret", signature, body)
    assert not verify(secret, "v1=" + signature.split("v1=")[1], body)
    stale = webhook.sign(secret, int(time.time()) - 600, body)
    assert not verify(secret, stale, body)
    fresh = webhook.sign(secret, int(time.time()), body)
    assert verify(secret, fresh, body)
