"""Call-level approvals: an approval permits exactly the call it was given for, in its window."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning.database import utcnow
from provisioning.entitlements import approvals
from provisioning.requests.models import AccessRequest, RequestKind, RequestState
from tests.org import Org

ARGUMENTS = {"repo": "acme/api", "number": 42}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture
def approval(database, origin) -> dict:
    """Ada's approved call of github/merge_pull_request with ARGUMENTS, for an hour."""
    now = utcnow()
    with database.transaction() as session:
        org = Org(session, origin)
        ada, eve = org.user("ada@example.com"), org.user("eve@example.com")
        github = org.connector(
            "github", actions=(("merge_pull_request", "write", "needs_approval"),)
        )
        version = approvals.policy_version("needs_approval", True, ["owner"])
        call = {
            "connector": "github",
            "action": "merge_pull_request",
            "arguments_digest": approvals.arguments_digest({"arguments": ARGUMENTS}),
            "policy_version": version,
        }
        session.add(
            AccessRequest(
                user_id=ada.id,
                requested_by_id=ada.id,
                requested_by=ada.user_name,
                connector_id=github.id,
                access_level="read_write",
                actions=["merge_pull_request"],
                justification="a call",
                duration_days=0,
                approvers=["owner"],
                state=RequestState.APPROVED,
                deadline=now + dt.timedelta(days=1),
                kind=RequestKind.CALL,
                call=call,
                task_id="arq_t",
                approval_id="apr_a",
                approved_until=now + dt.timedelta(hours=1),
            )
        )
        return {
            "people": {"ada": str(ada.id), "eve": str(eve.id)},
            "version": version,
            "until": now + dt.timedelta(hours=1),
        }


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    who=st.sampled_from(["ada", "eve"]),
    tool=st.sampled_from(["merge_pull_request", "close_issue"]),
    connector=st.sampled_from(["github", "gitlab"]),
    arguments=st.one_of(st.just(ARGUMENTS), json_values, st.none().map(lambda _: ...)),
    same_version=st.booleans(),
    seconds=st.integers(min_value=-3600, max_value=7200),
)
def test_an_approval_permits_only_its_own_call_within_its_window(
    database, approval, who, tool, connector, arguments, same_version, seconds
):
    context = {} if arguments is ... else {"arguments": arguments}
    binding = approvals.Binding(
        approval["people"][who],
        connector,
        tool,
        approvals.arguments_digest(context),
        approval["version"]
        if same_version
        else approvals.policy_version("needs_approval", True, ["manager"]),
    )
    now = approval["until"] - dt.timedelta(hours=1) + dt.timedelta(seconds=seconds)
    with database.engine.connect() as connection:
        verdict = approvals.applies(connection, {"id": "apr_a"}, binding, now)
    exact = (
        who == "ada"
        and tool == "merge_pull_request"
        and connector == "github"
        and arguments == ARGUMENTS
        and same_version
    )
    assert verdict.allowed == (exact and now < approval["until"])
    if not verdict.allowed:
        assert verdict.approval is None


def test_a_binding_token_reads_back_only_unaltered(database):
    signer, other = approvals.Signer("s" * 32), approvals.Signer("t" * 32)
    binding = approvals.Binding("u", "github", "merge", "d" * 64, "v")
    token, expires = signer.issue(binding, "e-1", utcnow())
    claims = signer.read(token)
    assert approvals.bound(claims) == binding and claims[
        "denial_expires_at"
    ] == approvals.timestamp(expires)
    head, body, signature = token.split(".")
    for forged in (f"{head}.{body}x.{signature}", f"{head}.{body}.{signature[:-2]}", "a.b.c", ""):
        with pytest.raises(approvals.BindingError):
            signer.read(forged)
    with pytest.raises(approvals.BindingError):
        other.read(token)
