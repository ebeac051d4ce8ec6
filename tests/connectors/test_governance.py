"""The governance guards: the problem list and the SQL predicate come out the same."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from provisioning.connectors import governance
from provisioning.connectors.models import Connector


def test_every_connector_state_is_grantable_in_sql_exactly_when_python_finds_no_problem(database):
    states = list(
        itertools.product(
            [True, False],  # enabled
            ["directory", "third_party", "internal"],
            ["pending", "approved", "rejected"],
            ["public", "internal", "confidential", "regulated"],
            [None, "", "DPIA-7"],  # compliance assessment: none, empty, recorded
        )
    )
    with database.transaction() as session:
        for i, (enabled, publisher, review, classification, assessment) in enumerate(states):
            session.add(
                Connector(
                    slug=f"c{i}",
                    name=f"c{i}",
                    kind="remote",
                    capability="read",
                    publisher=publisher,
                    security_review=review,
                    data_classification=classification,
                    compliance_assessment=assessment,
                    enabled=enabled,
                )
            )
    with database.reader() as session:
        rows = session.execute(
            select(Connector, governance.grantable()).order_by(Connector.id)
        ).all()
        assert len(rows) == len(states)
        for connector, grantable in rows:
            problems = governance.enablement_problems(connector)
            assert bool(grantable) == (connector.enabled and not problems), connector.slug
            broken = {guard.name for guard in governance.broken(connector)}
            third_party = connector.publisher == "third_party"
            assert ("unreviewed_third_party" in broken) == (
                third_party and connector.security_review != "approved"
            )
            assert ("unassessed_regulated" in broken) == (
                connector.data_classification == "regulated" and not connector.compliance_assessment
            )
