"""scim2-server's own storage contract, run against our SQL storage on SQLite or PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from scim2_server.testing import ScimStorageContract

from provisioning.identity.models import User
from scim.resources import provider as scim_provider
from scim.storage import SqlStorage


class TestSqlStorage(ScimStorageContract):
    @pytest.fixture
    def provider(self):
        return scim_provider()

    @pytest.fixture
    def storage(self, database):
        return SqlStorage(database)

    def test_a_creation_is_committed_when_it_returns(
        self, storage, database, user_type, user_model
    ):
        """A creation is the last call of its operation in scim2-server's flows: its
        writes are committed before the resource it returns is built. Another connection
        sees the user while the operation is still open, the operation reads on, and a
        failure after it leaves the user stored."""
        with pytest.raises(RuntimeError), storage.operation():
            (user,) = self.create_users(storage, user_type, user_model, "bjensen")
            with database.reader() as session:
                assert session.get(User, uuid.UUID(user.id)).user_name == "bjensen"
            assert storage.get(user_type, user.id).user_name == "bjensen"
            raise RuntimeError
        with database.reader() as session:
            assert session.get(User, uuid.UUID(user.id)) is not None
