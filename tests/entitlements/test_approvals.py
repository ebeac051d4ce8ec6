"""Call-level approvals: an approval permits exactly the call it was given for, in its window."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from provisioning.database import utcnow
from provisioning.entitlements import approvals
from provisioning.identity.models import User
from provisioning.requests.models import AccessRequest, RequestState
from tests.org import Org, call_task

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
            call_task(
                ada,
                github.id,
                "merge_pull_request",
                state=RequestState.APPROVED,
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


def test_a_binding_token_names_its_key_and_is_read_only_with_it(database):
    """The header's ``kid`` is the key's RFC 7638 thumbprint, as an approval state's is; a
    token signed with the right key under another (or no) ``kid`` is not read."""
    from joserfc import jwt

    signer = approvals.Signer("s" * 32)
    token, _ = signer.issue(approvals.Binding("u", "g", "m", "d" * 64, "v"), "e", utcnow())
    decoded = jwt.decode(token, signer.key, algorithms=[approvals.ALGORITHM])
    assert decoded.header == {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    for header in ({"alg": "HS256", "typ": "JWT"}, {**decoded.header, "kid": "other"}):
        resigned = jwt.encode(header, decoded.claims, signer.key)
        with pytest.raises(approvals.BindingError):
            signer.read(resigned)


# -- approval.state ----------------------------------------------------------------------

PDP = "https://pdp.example"
SIGNER = approvals.Signer("s" * 32)
CALLS = approvals.Calls(lambda: SIGNER, f"{PDP}/access/v1/requests", PDP)
FIELDS = ("sub", "connector", "action", "arguments_digest", "policy_version")
FORGERIES = (
    "other_id",  # signed for another approval than the one presented
    "other_task",
    "other_binding",  # signed for another person, connector, tool, arguments or policy
    "other_aud",  # for another PDP
    "other_iss",
    "expired",
    "alg_none",
    "wrong_key",
    "tampered",  # a byte of the payload changed
    "swapped",  # Eve's genuine state presented with Ada's approval id
    "other_kid",
    "no_kid",
    "other_typ",  # e.g. a binding token's
    "not_text",
)


def _b64(data: dict) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _state(database, approval_id: str) -> tuple[str, dict]:
    from joserfc import jwt

    with database.reader() as session:
        row = session.query(AccessRequest).filter_by(approval_id=approval_id).one()
        token = SIGNER.state(row, PDP)
    return token, dict(jwt.decode(token, SIGNER.key).claims)


def _forged(database, kind: str, field: str) -> object:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    token, claims = _state(database, "apr_a")
    header = {"alg": "HS256", "typ": approvals.STATE_TYPE, "kid": SIGNER.kid}
    key = SIGNER.key
    if kind == "other_id":
        claims["approval_id"] = "apr_b"
    elif kind == "other_task":
        claims["task_id"] = "arq_u"
    elif kind == "other_binding":
        claims[field] = claims[field] + "x"
    elif kind == "other_aud":
        claims["aud"] = "https://third-pdp.example"
    elif kind == "other_iss":
        claims["iss"] = approvals.ISSUER
    elif kind == "expired":
        claims["exp"] = int(utcnow().timestamp()) - 1
    elif kind == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': approvals.STATE_TYPE})}.{_b64(claims)}."
    elif kind == "wrong_key":
        key = OctKey.import_key(b"t" * 32)
    elif kind == "tampered":
        head, body, signature = token.split(".")
        body = _b64({**claims, "sub": claims["sub"][:-1] + "0"})
        return f"{head}.{body}.{signature}"
    elif kind == "swapped":
        return _state(database, "apr_b")[0]
    elif kind == "other_kid":
        header["kid"] = "other"
    elif kind == "no_kid":
        del header["kid"]
    elif kind == "other_typ":
        header["typ"] = "JWT"
    elif kind == "not_text":
        return {"token": token}
    return jwt.encode(header, claims, key)


@pytest.fixture
def two(database, origin, approval) -> dict:
    """Beside Ada's approval (apr_a, task arq_t), Eve's of the same call (apr_b, arq_u)."""
    with database.transaction() as session:
        ada = session.query(AccessRequest).filter_by(approval_id="apr_a").one()
        session.add(
            call_task(
                session.get(User, uuid.UUID(approval["people"]["eve"])),
                ada.connector_id,
                "merge_pull_request",
                state=RequestState.APPROVED,
                call=dict(ada.call),
                task_id="arq_u",
                approval_id="apr_b",
                approved_until=ada.approved_until,
            )
        )
    return approval


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    presented=st.sampled_from(["genuine", "lookup", *FORGERIES]),
    field=st.sampled_from(FIELDS),
    status=st.sampled_from([RequestState.APPROVED, RequestState.CANCELLED, RequestState.DENIED]),
    who=st.sampled_from(["ada", "eve"]),
    same_arguments=st.booleans(),
    audience=st.sampled_from([PDP, "https://other-pdp.example"]),
)
def test_only_a_genuine_state_for_the_exact_call_is_accepted(
    database, two, presented, field, status, who, same_arguments, audience
):
    """The state is verified (signature, kid, typ, iss, aud, exp, the approval and task it
    names, the binding) and the record still decides: a forged, swapped or tampered state
    never allows a call, nor a genuine one of an approval no longer approved."""
    with database.transaction() as session:
        session.execute(
            update(AccessRequest).where(AccessRequest.approval_id == "apr_a").values(state=status)
        )
    approval: dict = {"id": "apr_a"}
    if presented == "genuine":
        approval["state"] = _state(database, "apr_a")[0]
    elif presented != "lookup":
        approval["state"] = _forged(database, presented, field)
    arguments = ARGUMENTS if same_arguments else {**ARGUMENTS, "number": 43}
    binding = approvals.Binding(
        two["people"][who],
        "github",
        "merge_pull_request",
        approvals.arguments_digest({"arguments": arguments}),
        two["version"],
    )
    calls = approvals.Calls(CALLS.signer, CALLS.endpoint, audience)
    with database.engine.connect() as connection:
        verdict = approvals.applies(connection, approval, binding, utcnow(), calls)
    exact = who == "ada" and same_arguments and status is RequestState.APPROVED
    verified = presented == "lookup" or (presented == "genuine" and audience == PDP)
    assert verdict.allowed == (exact and verified), (presented, verdict)
    if presented == "expired":  # genuine but lapsed: asked for again, when in scope
        assert verdict.reason != "approved"
    elif presented in FORGERIES or (presented == "genuine" and audience != PDP):
        assert (verdict.reason, verdict.next_action) == ("approval_unverifiable", "none")


def test_a_state_is_never_read_as_a_binding_token_nor_one_as_a_state(database, two):
    token, _ = _state(database, "apr_a")
    with pytest.raises(approvals.BindingError):
        SIGNER.read(token)
    binding = approvals.Binding("u", "github", "merge", "d" * 64, "v")
    issued, _ = SIGNER.issue(binding, "e-1", utcnow())
    for audience in (PDP, approvals.AUDIENCE):
        with pytest.raises(approvals.BindingError):
            SIGNER.read_state(issued, audience)
    # The state is the same for every read of the task (the PEP keeps it unchanged).
    assert _state(database, "apr_a")[0] == token
