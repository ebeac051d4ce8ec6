"""scim2-tester, the SCIM compliance checker, against the service over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server
from werkzeug.serving import make_server

from tests.scim.conftest import make_app, make_token


@pytest.fixture
def live_server(database) -> Iterator[tuple[str, str]]:
    """The service on an ephemeral port of 127.0.0.1, served by Werkzeug in a thread."""
    secret = make_token(database, "compliance", ["scim:provision"])
    server = make_server("127.0.0.1", 0, make_app(database), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/scim/v2", secret
    finally:
        server.shutdown()
        thread.join(5)


def test_scim2_tester_finds_no_error(live_server):
    url, secret = live_server
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as http:
        client = SyncSCIMClient(http)
        results = check_server(client)

    assert results, "scim2-tester ran no check"
    failures = [r for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert not failures, "\n".join(f"{r.title}: {r.reason}" for r in failures)
    ran = [r for r in results if r.status != Status.SKIPPED]
    assert len(ran) > 20
