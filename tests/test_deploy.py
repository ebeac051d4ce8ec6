"""The production gunicorn configuration serves the application, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from provisioning.audit.log import Origin, Source
from provisioning.tokens import credentials
from tests.test_cli import free_port, get

CONFIG = Path(__file__).parent.parent / "deploy" / "gunicorn.conf.py"


def gunicorn(database, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "PROVISIONING_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(CONFIG)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = get(f"http://127.0.0.1:{port}/readyz")
            assert status == 200 and body["status"] == "ready"
            return process
        except OSError:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)


def test_gunicorn_config_serves_a_migrated_database(databases):
    database = databases.empty()
    database.upgrade()
    process = gunicorn(database, free_port())
    process.terminate()
    process.wait(timeout=10)
    database.dispose()


def test_sigterm_drains_a_request_under_way(databases):
    """A request half sent when gunicorn is told to stop is still read and answered."""
    database = databases.empty()
    database.upgrade()
    with database.transaction() as session:
        token = credentials.create(
            session, "drain", ["decisions:check"], Origin("test", Source.CLI)
        )
    port = free_port()
    process = gunicorn(database, port)
    try:
        body = json.dumps(
            {
                "user": "nobody@example.com",
                "connector": "github",
                "action": "read",
                "interface": "code",
            }
        ).encode()
        head = (
            f"POST /api/v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: drain-1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.5)  # the worker has the request and waits for its body
            process.send_signal(signal.SIGTERM)
            time.sleep(1)
            sock.sendall(body[10:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] in (b"200", b"404"), answer
        assert b"X-Request-ID: drain-1" in rest
        assert process.wait(timeout=30) == 0
        # And then it listens no more.
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            raise AssertionError("gunicorn still accepts connections")
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        database.dispose()
