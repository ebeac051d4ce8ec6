"""schemathesis against /api/v1/openapi.json on a live server: no 5xx, no answer off the
schema, no operation that answers without a credential, 405 for unsupported methods.

Bounded for CI: a fixed seed and 10 examples per operation, through every phase
(coverage, fuzzing, stateful), positive and negative data; EDGE_FUZZ_SCHEMATHESIS_EXAMPLES
sets the examples per operation for a longer run. Not checked: that schema-violating
data is refused (negative_data_rejection), since pydantic's lax mode reads 0 and 1 as
booleans and numbers as timestamps.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from werkzeug.serving import make_server

from provisioning.audit.log import Origin, Source
from provisioning.demo import seed
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "ignored_auth",
        "unsupported_method",
    ]
)


class Errors(logging.Handler):
    """The error records the app logs (its logger is shared: a handler, not a patch)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(database, tmp_path):
    with database.transaction() as session:
        seed(session, Origin("demo", Source.CLI))
        secret = credentials.create(
            session, "fuzzer", [s.value for s in credentials.Scope], Origin("test", Source.CLI)
        )
    app = create_app(load(database_url=database.url), database)
    errors = Errors()
    app.logger.addHandler(errors)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {secret}",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("EDGE_FUZZ_SCHEMATHESIS_EXAMPLES", "10"),
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ]
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
    finally:
        server.shutdown()
        thread.join()
        app.logger.removeHandler(errors)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    assert [record.getMessage() for record in errors.records] == []
