"""scim2-server's own storage contract, run against our SQL storage on SQLite or PostgreSQL."""

from __future__ import annotations

import pytest
from scim2_server.testing import ScimStorageContract

from scim.resources import provider as scim_provider
from scim.storage import SqlStorage


class TestSqlStorage(ScimStorageContract):
    @pytest.fixture
    def provider(self):
        return scim_provider()

    @pytest.fixture
    def storage(self, database):
        return SqlStorage(database)
