"""Concurrent SCIM requests on one group: none lost, none refused without If-Match."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import select

from provisioning.identity.models import Membership
from tests.scim.conftest import GROUP_SCHEMA, Scim, make_app, okta_user


def test_parallel_member_adds_to_one_group_all_land(scim):
    group = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "all-hands"}).get_json()
    users = [scim.post("/Users", okta_user(f"p{n}@example.com")).get_json()["id"] for n in range(8)]
    app = make_app(scim.database)
    statuses: list[int] = []
    barrier = threading.Barrier(len(users))

    def add(user_id: str) -> None:
        client = Scim(app.test_client(), scim.secret, scim.database)
        barrier.wait()
        response = client.patch(
            f"/Groups/{group['id']}",
            [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=add, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * len(users)
    with scim.database.reader() as session:
        present = session.scalars(
            select(Membership.user_id).where(
                Membership.group_id == uuid.UUID(group["id"]), Membership.present.is_(True)
            )
        ).all()
    assert sorted(str(p) for p in present) == sorted(users)
    members = scim.get(f"/Groups/{group['id']}").get_json()["members"]
    assert sorted(m["value"] for m in members) == sorted(users)
