"""Fixtures: an Okta-compatible server on 127.0.0.1 and a real okta SDK client pointed at it."""

from __future__ import annotations

import pytest

from provisioning.okta.client import OktaClient
from tests.okta.okta_server import TOKEN, OktaServer


@pytest.fixture
def okta():
    with OktaServer() as server:
        yield server


@pytest.fixture
def client(okta):
    client = OktaClient(okta.url, api_token=TOKEN, allow_http=True)  # the server is plain http
    yield client
    client.close()
