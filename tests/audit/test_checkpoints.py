"""Signed checkpoints: a head held elsewhere shows any cut or rewrite of the chain up to it."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import OKPKey, RSAKey
from sqlalchemy import text

from jobs.registry import JOBS
from provisioning.audit import checkpoints
from provisioning.audit import log as audit
from provisioning.audit.models import GENESIS_HASH
from provisioning.settings import SettingsError, load
from tests.audit.dba import bypassing_triggers, cut, events, rechain
from tests.audit.test_log import write_events
from tests.delivery.conftest import add_target


@pytest.fixture(scope="module")
def key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def pem(key: OKPKey) -> str:
    return key.as_pem(private=True).decode()


def checkpoint_now(database, key: OKPKey) -> str:
    with database.reader() as session:
        return checkpoints.sign(checkpoints.take(session), key)


def verdict(database, *tokens: str, keys: list[OKPKey]) -> audit.Verification:
    anchors = []
    for n, token in enumerate(tokens):
        held = checkpoints.read(token, keys)
        anchors.append(audit.Anchor(held.event_id, held.hash, f"checkpoint {n + 1}"))
    with database.reader() as session:
        return audit.verify(session, anchors)


def test_a_checkpoint_signs_the_head(database, origin, key):
    write_events(database, origin, 3)
    token = checkpoint_now(database, key)
    held = checkpoints.read(token, [checkpoints.public_key(key.as_pem(private=False).decode())])
    with database.reader() as session:
        result = audit.verify(session)
    assert (held.event_id, held.hash) == (3, result.head_hash)
    assert held.key_id == key.thumbprint()
    header, payload, _ = token.split(".")
    assert json.loads(_b64(header)) == {
        "alg": "Ed25519",
        "kid": key.thumbprint(),
        "typ": checkpoints.TYPE,
    }
    assert set(json.loads(_b64(payload))) == {"event_id", "hash", "signed_at"}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_the_chain_going_on_past_a_checkpoint_verifies(database, origin, key):
    write_events(database, origin, 3)
    first = checkpoint_now(database, key)
    write_events(database, origin, 4)
    second = checkpoint_now(database, key)
    write_events(database, origin, 1)
    result = verdict(database, first, second, keys=[key])
    assert result.intact, result.problem
    assert (result.checked, result.anchored) == (8, 2)


def test_a_checkpoint_of_the_empty_chain_verifies(database, key):
    result = verdict(database, checkpoint_now(database, key), keys=[key])
    assert result.intact and result.anchored == 1


def test_cutting_the_tail_and_rewriting_the_head_is_caught_by_a_checkpoint(database, origin, key):
    write_events(database, origin, 6)
    token = checkpoint_now(database, key)
    with bypassing_triggers(database) as conn:
        cut(conn, after=4)
    assert verdict(database, keys=[key]).intact  # the chain alone looks whole
    result = verdict(database, token, keys=[key])
    assert not result.intact
    assert result.broken_at == 5
    assert "checkpoint 1 names event 6" in result.problem
    assert "log ends at event 4" in result.problem


def test_emptying_the_log_and_resetting_the_head_is_caught(database, origin, key):
    write_events(database, origin, 3)
    token = checkpoint_now(database, key)
    with bypassing_triggers(database) as conn:
        if database.dialect == "postgresql":
            conn.execute(text("TRUNCATE audit_events"))
        else:
            conn.execute(text("DELETE FROM audit_events"))
        conn.execute(
            text("UPDATE audit_chain_head SET last_event_id = 0, last_hash = :g"),
            {"g": GENESIS_HASH},
        )
    assert verdict(database, keys=[key]).intact
    result = verdict(database, token, keys=[key])
    assert result.broken_at == 1 and "names event 3" in result.problem


def test_rewriting_an_event_and_rehashing_the_chain_is_caught(database, origin, key):
    write_events(database, origin, 5)
    token = checkpoint_now(database, key)
    with bypassing_triggers(database) as conn:
        rows = events(conn)
        rows[1]["actor"] = "mallory"
        rechain(conn, rows)
    assert verdict(database, keys=[key]).intact  # consistent again: every hash recomputed
    result = verdict(database, token, keys=[key])
    assert result.broken_at == 5
    assert "not the event checkpoint 1 signed" in result.problem


def rewritten(rows: list[dict], how: str, at: int) -> list[dict]:
    """``rows`` with one change at position ``at`` (1-based)."""
    rows, i = [dict(r) for r in rows], at - 1
    if how == "alter":
        rows[i]["after"] = {**rows[i]["after"], "n": -1}
    elif how == "delete":
        del rows[i]
    elif how == "insert":
        rows.insert(i, {**rows[i], "subject_id": "inserted"})
    else:  # swap with the next one (or the one before, at the end)
        j = i + 1 if i + 1 < len(rows) else i - 1
        rows[i], rows[j] = rows[j], rows[i]
        i = min(i, j)
    return rows


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(2, 8),
    at=st.integers(0, 8),
    how=st.sampled_from(["alter", "delete", "insert", "swap"]),
    where=st.integers(1, 8),
)
def test_a_rewritten_history_is_caught_exactly_when_it_reaches_into_a_checkpoint(
    fresh_database, origin, key, size, at, how, where
):
    """Any event changed, removed, inserted or moved, and every hash after it
    recomputed with the head: caught when at or before the checkpoint's event."""
    at, where = min(at, size), min(where, size)
    database = fresh_database()
    write_events(database, origin, at)
    token = checkpoint_now(database, key)
    write_events(database, origin, size - at)
    with bypassing_triggers(database) as conn:
        original = events(conn)
        rows = rewritten(original, how, where)
        rechain(conn, rows)
    first_change = next(
        (n for n, (a, b) in enumerate(zip(original, rows, strict=False), 1) if a != b),
        min(len(original), len(rows)) + 1,
    )
    assert verdict(database, keys=[key]).intact
    assert verdict(database, token, keys=[key]).intact == (first_change > at)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(1, 8), at=st.integers(0, 8), keep=st.integers(0, 8))
def test_a_cut_is_caught_exactly_when_it_reaches_into_a_checkpoint(
    fresh_database, origin, key, size, at, keep
):
    """Cutting every event after ``keep`` is caught when the checkpoint named one of
    them, and only then: what came after the latest checkpoint held elsewhere can go."""
    at, keep = min(at, size), min(keep, size)
    database = fresh_database()
    write_events(database, origin, at)
    token = checkpoint_now(database, key)
    write_events(database, origin, size - at)
    with bypassing_triggers(database) as conn:
        cut(conn, after=keep)
    result = verdict(database, token, keys=[key])
    assert result.intact == (keep >= at), result.problem


def test_a_checkpoint_signed_with_another_key_is_refused(database, origin, key):
    write_events(database, origin, 2)
    forged = checkpoint_now(database, OKPKey.generate_key("Ed25519"))
    with pytest.raises(checkpoints.CheckpointError, match="signature"):
        checkpoints.read(forged, [key])


def test_an_altered_checkpoint_is_refused(database, origin, key):
    write_events(database, origin, 2)
    header, payload, signature = checkpoint_now(database, key).split(".")
    claims = json.loads(_b64(payload))
    claims["event_id"] = 1
    altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(checkpoints.CheckpointError, match="signature"):
        checkpoints.read(f"{header}.{altered}.{signature}", [key])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a checkpoint",
        "a.b.c",
        # alg none, and an HMAC keyed with the public key (algorithm confusion)
        "eyJhbGciOiJub25lIn0.eyJldmVudF9pZCI6MX0.",
        "eyJhbGciOiJIUzI1NiJ9.eyJldmVudF9pZCI6MX0.c2lnbmF0dXJl",
    ],
)
def test_garbage_is_refused_as_a_checkpoint(key, token):
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.read(token, [key])


@pytest.mark.parametrize(
    "claims",
    [
        {"event_id": -1, "hash": GENESIS_HASH, "signed_at": "2026-11-24T10:00:00Z"},
        {"event_id": "3", "hash": GENESIS_HASH, "signed_at": "2026-11-24T10:00:00Z"},
        {"event_id": True, "hash": GENESIS_HASH, "signed_at": "2026-11-24T10:00:00Z"},
        {"event_id": 3, "hash": "abc", "signed_at": "2026-11-24T10:00:00Z"},
        {"event_id": 3, "hash": GENESIS_HASH, "signed_at": "yesterday"},
        {"event_id": 3, "hash": GENESIS_HASH},
        [3, GENESIS_HASH],
    ],
)
def test_a_well_signed_checkpoint_with_malformed_claims_is_refused(key, claims):
    from joserfc import jws

    token = jws.serialize_compact(
        {"alg": "Ed25519", "typ": checkpoints.TYPE}, json.dumps(claims), key, algorithms=["Ed25519"]
    )
    with pytest.raises(checkpoints.CheckpointError, match="malformed"):
        checkpoints.read(token, [key])


def test_several_public_keys_verify_checkpoints_across_a_rotation(database, origin, key):
    old, new = OKPKey.generate_key("Ed25519"), key
    write_events(database, origin, 2)
    before = checkpoint_now(database, old)
    write_events(database, origin, 2)
    after = checkpoint_now(database, new)
    assert verdict(database, before, after, keys=[new, old]).intact


# -- keys --------------------------------------------------------------------


def test_the_signing_key_setting_takes_pem_jwk_or_a_file(tmp_path, key):
    as_jwk = json.dumps(key.as_dict(private=True))
    path = tmp_path / "audit.pem"
    path.write_text(pem(key))
    for value in (pem(key), as_jwk, str(path)):
        loaded = checkpoints.private_key(load(audit_signing_key=value).audit_signing_key)
        assert loaded.thumbprint() == key.thumbprint()


@pytest.mark.parametrize(
    "value",
    [
        "not-a-key-and-not-a-file",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        '{"kty": "OKP"}',
        "PUBLIC",  # the public half cannot sign
        "RSA",
        "X25519",
    ],
)
def test_a_bad_signing_key_stops_the_service_naming_the_setting(key, value):
    if value == "PUBLIC":
        value = key.as_pem(private=False).decode()
    elif value == "RSA":
        value = RSAKey.generate_key(2048).as_pem(private=True).decode()
    elif value == "X25519":
        value = OKPKey.generate_key("X25519").as_pem(private=True).decode()
    with pytest.raises(SettingsError) as caught:
        load(audit_signing_key=value)
    message = str(caught.value)
    assert message.startswith("invalid setting PROVISIONING_AUDIT_SIGNING_KEY")
    assert "\n" not in message and value not in message  # never echoes a secret


def test_public_key_is_the_signing_keys_public_half(key):
    public = checkpoints.public_jwk(key)
    assert public == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key.as_dict(private=False)["x"],
        "kid": key.thumbprint(),
        "alg": "Ed25519",
        "use": "sig",
    }
    assert checkpoints.public_key(json.dumps(public)).thumbprint() == key.thumbprint()
    assert not checkpoints.public_key(pem(key)).is_private


# -- the scheduled job ---------------------------------------------------------------


def test_the_checkpoint_job_runs_only_with_a_key(database, key):
    job = JOBS["audit-checkpoint"]
    assert job.setting == "schedule_audit_checkpoint"
    assert not job.enabled(load(database_url=database.url))
    assert job.enabled(load(database_url=database.url, audit_signing_key=pem(key)))
    with pytest.raises(Exception, match="PROVISIONING_AUDIT_SIGNING_KEY"):
        job.run(database, load(database_url=database.url), lambda *_: None)


def test_the_checkpoint_job_tells_the_targets_a_signed_checkpoint(database, origin, key, receiver):
    from provisioning.delivery.worker import Deliverer

    add_target(database, "webhook", receiver.url, receiver.secret)
    write_events(database, origin, 4)
    # The receiver listens on 127.0.0.1, which targets may reach only when allowed.
    settings = load(
        database_url=database.url,
        audit_signing_key=pem(key),
        delivery_allowed_networks="127.0.0.1/32",
    )
    counts = JOBS["audit-checkpoint"].run(database, settings, lambda *_: None)
    assert counts["event_id"] == 5 and counts["messages"] == 1  # 4 + the target's creation
    deliverer = Deliverer(database, settings)
    try:
        deliverer.drain()
    finally:
        deliverer.stop()
    [event] = receiver.of_type("audit.checkpoint")
    held = event["data"]["checkpoint"]
    assert "user" not in event["data"]
    # What the receiver holds is enough to check the log later, with the public key alone.
    public = checkpoints.public_key(json.dumps(checkpoints.public_jwk(key)))
    signed = checkpoints.read(held["jws"], [public])
    assert (signed.event_id, signed.hash) == (held["event_id"], held["hash"]) == (5, counts["hash"])
    write_events(database, origin, 2)
    assert verdict(database, held["jws"], keys=[public]).intact
    with bypassing_triggers(database) as conn:
        cut(conn, after=3)
    assert not verdict(database, held["jws"], keys=[public]).intact


def test_checkpoints_taken_while_writers_append_each_name_a_real_head(database, origin, key):
    """The head is read under the writers' lock: a writer advancing it between the
    reads never makes a checkpoint fail or sign a head the chain did not have."""
    import threading

    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            write_events(database, origin, 1)

    writers = [threading.Thread(target=append) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        tokens = [checkpoint_now(database, key) for _ in range(100)]
    finally:
        stop.set()
        for writer in writers:
            writer.join(10)
    result = verdict(database, *tokens, keys=[key])
    assert result.intact, result.problem
    assert result.anchored == 100
