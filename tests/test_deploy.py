"""The production gunicorn configuration serves the application."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli import free_port, get

CONFIG = Path(__file__).parent.parent / "deploy" / "gunicorn.conf.py"


def test_gunicorn_config_serves_a_migrated_database(databases):
    database = databases.empty()
    database.upgrade()
    port = free_port()
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
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        assert status == 200 and body["status"] == "ready"
    finally:
        process.terminate()
        process.wait(timeout=10)
        database.dispose()
