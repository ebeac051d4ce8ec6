"""The service as production runs it: gunicorn with deploy/gunicorn.conf.py, on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.audit.log import Origin, Source
from provisioning.database import Database
from provisioning.tokens import credentials

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4096
HOOK_SECRET = "hook-secret-0123456789"


@dataclass
class Served:
    """A gunicorn server of the service, its database, a token with every scope, its log."""

    port: int
    database: Database
    token: str
    log: Path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def served(databases, tmp_path_factory) -> Iterator[Served]:
    """One gunicorn worker (deploy/gunicorn.conf.py), a body limit of LIMIT bytes."""
    database = databases.empty()
    database.upgrade()
    with database.transaction() as session:
        token = credentials.create(
            session, "edge-tests", [s.value for s in credentials.Scope], Origin("test", Source.CLI)
        )
    port = _free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "PROVISIONING_BIND": f"127.0.0.1:{port}",
        "PROVISIONING_MAX_REQUEST_BYTES": str(LIMIT),
        "PROVISIONING_OKTA_HOOK_SECRETS": HOOK_SECRET,
        "WEB_CONCURRENCY": "1",
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(gunicorn), "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.2)
        yield Served(port, database, token, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        database.dispose()
