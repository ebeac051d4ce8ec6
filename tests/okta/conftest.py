"""Fixtures: an Okta-compatible server on 127.0.0.1 and a real okta SDK client pointed at it."""

from __future__ import annotations

import os

import pytest

from provisioning.okta.client import OktaClient
from tests.okta.okta_server import TOKEN, OktaServer

# The SDK insists on https unless this is set (read from the environment only).
os.environ.setdefault("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")


@pytest.fixture
def okta():
    with OktaServer() as server:
        yield server


@pytest.fixture
def client(okta):
    client = OktaClient(okta.url, api_token=TOKEN)
    yield client
    client.close()
