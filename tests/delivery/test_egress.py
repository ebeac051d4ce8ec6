"""The egress policy: delivery never reaches internal addresses unless their network is allowed.

Checked when a target is created or its URL changed, and again on the address
each connection is made to. The receivers here listen on 127.0.0.1: allowed
only where a test says so.
"""

from __future__ import annotations

import datetime as dt
import ssl
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning.cli import main
from provisioning.delivery.egress import METADATA_ADDRESSES, Egress, EgressRefused, ipv4_inside
from provisioning.delivery.models import OutboxMessage, Target
from provisioning.delivery.targets import TargetError, check_url, update
from provisioning.delivery.worker import Deliverer
from provisioning.settings import SettingsError, load
from tests.delivery.conftest import ADMIN, LOCAL, RECEIVERS, add_target
from tests.delivery.servers import WebhookReceiver
from tests.delivery.test_failures import (
    errors_counted,
    fail_until_dead,
    insert_target,
    message,
    owe,
)

DEFAULT = Egress()

FORBIDDEN = [
    ("http://127.0.0.1/h", "127.0.0.1 is a loopback address"),
    ("http://127.8.9.10:8080/h", "a loopback address"),
    ("http://[::1]/h", "::1 is a loopback address"),
    ("http://localhost:8000/h", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://2130706433/h", "resolves to 127.0.0.1, a loopback address"),  # as one number
    ("http://0x7f.1/h", "resolves to 127.0.0.1, a loopback address"),
    ("http://169.254.1.1/h", "a link-local address"),
    ("http://[fe80::1]/h", "a link-local address"),
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata name"),
    ("http://10.1.2.3/h", "a private address"),
    ("http://172.16.5.4/h", "a private address"),
    ("https://192.168.1.1/h", "a private address"),
    ("http://100.64.0.1/h", "a shared (CGNAT) address"),
    ("http://[fc00::1]/h", "a unique-local address"),
    ("http://[fd12:3456::1]/h", "a unique-local address"),
    ("http://224.0.0.1/h", "a multicast address"),
    ("http://[ff02::1]/h", "a multicast address"),
    ("http://0.0.0.0/h", "an unspecified address"),
    ("http://[::]/h", "an unspecified address"),
    ("http://240.0.0.1/h", "a reserved address"),
    ("http://255.255.255.255/h", "a reserved address"),
    ("http://192.0.2.10/h", "a reserved address"),  # documentation
    ("http://[::ffff:127.0.0.1]/h", "a loopback address inside IPv6"),
    ("http://[::ffff:10.0.0.1]/h", "a private address inside IPv6"),
    ("http://[::ffff:169.254.169.254]/h", "a cloud metadata address"),
    ("http://[::127.0.0.1]/h", "a loopback address inside IPv6"),  # IPv4-compatible
    ("http://[2002:7f00:1::]/h", "a loopback address inside IPv6"),  # 6to4
    ("http://[64:ff9b::a00:1]/h", "a private address inside IPv6"),  # NAT64
]


@pytest.mark.parametrize(("url", "reason"), FORBIDDEN)
def test_a_target_at_an_internal_address_is_refused_at_creation(database, url, reason):
    with pytest.raises(TargetError) as refused:
        add_target(database, "webhook", url, "secret-0123456789", egress=DEFAULT)
    assert refused.value.field == "url"
    assert "refused by the egress policy" in str(refused.value)
    assert reason in str(refused.value)
    with database.reader() as session:
        assert session.scalar(select(func.count(Target.id))) == 0


def test_a_changed_url_must_be_checked_as_a_new_one(database):
    target = add_target(database, "webhook", "http://8.8.8.8/events", "s" * 16, egress=DEFAULT)
    with pytest.raises(TargetError) as refused:
        check_url("http://10.0.0.7/events", DEFAULT)
    assert "10.0.0.7 is a private address" in str(refused.value)
    with pytest.raises(TypeError), database.transaction() as session:  # unchecked: refused
        update(session, ADMIN, session.get(Target, target.id), {"url": "http://10.0.0.7/"})
    with database.reader() as session:
        assert session.get(Target, target.id).url == "http://8.8.8.8/events"


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/events",
        "https://[2606:4700:4700::1111]/events",
        "http://[::ffff:8.8.8.8]/events",
        # A name that does not resolve now reaches nothing; each connection is checked.
        "https://hooks.invalid/events",
    ],
)
def test_public_addresses_and_unresolved_names_are_accepted(url):
    assert check_url(url, DEFAULT) == url


INTERNAL_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


def ipv6_forms(v4: IPv4Address) -> list[IPv6Address]:
    """The IPv6 addresses that carry ``v4``: mapped, compatible, 6to4, NAT64."""
    n = int(v4)
    return [
        IPv6Address(0xFFFF << 32 | n),
        IPv6Address(n),
        IPv6Address(0x2002 << 112 | n << 80),
        IPv6Address(int(ip_address("64:ff9b::")) | n),
    ]


@settings(max_examples=300, deadline=None)
@given(st.one_of(*(st.ip_addresses(v=4, network=n) for n in INTERNAL_V4)))
def test_every_internal_ipv4_address_is_refused_in_every_form(address):
    for form in [address, *ipv6_forms(address)]:
        assert DEFAULT.refusal(form) is not None, form


@settings(max_examples=300, deadline=None)
@given(
    st.ip_addresses(v=4).filter(
        lambda a: a.is_global and not a.is_multicast and a not in METADATA_ADDRESSES
    )
)
def test_public_ipv4_addresses_are_allowed_in_every_form(address):
    for form in [address, *ipv6_forms(address)]:
        assert DEFAULT.refusal(form) is None, form


@settings(max_examples=300, deadline=None)
@given(
    st.ip_addresses(v=6).filter(
        lambda a: a.is_global and not a.is_multicast and ipv4_inside(a) is None
    )
)
def test_public_ipv6_addresses_are_allowed(address):
    assert DEFAULT.refusal(address) is None


def test_the_allowed_networks_admit_internal_receivers_but_never_metadata():
    allowing = Egress((ip_network("127.0.0.1/32"), ip_network("169.254.0.0/16")))
    assert allowing.refusal(ip_address("127.0.0.1")) is None
    assert allowing.refusal(ip_address("::ffff:127.0.0.1")) is None
    assert allowing.refusal(ip_address("127.0.0.2")) == "a loopback address"
    assert allowing.refusal(ip_address("169.254.7.7")) is None
    assert allowing.refusal(ip_address("169.254.169.254")) == "a cloud metadata address"
    with pytest.raises(EgressRefused):
        allowing.addresses("metadata.google.internal", 80)
    assert check_url("http://localhost:8080/events", allowing) == "http://localhost:8080/events"


@pytest.mark.parametrize("value", ["bogus", "10.0.0.0/33", "127.0.0.1/8,nope", "::1/129"])
def test_a_bad_network_stops_the_service_naming_the_setting(value, database):
    with pytest.raises(SettingsError) as refused:
        load(delivery_allowed_networks=value)
    assert "PROVISIONING_DELIVERY_ALLOWED_NETWORKS" in str(refused.value)
    result = CliRunner().invoke(
        main,
        ["serve"],
        env={"DATABASE_URL": database.url, "PROVISIONING_DELIVERY_ALLOWED_NETWORKS": value},
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "PROVISIONING_DELIVERY_ALLOWED_NETWORKS" in result.stderr


def test_allowed_networks_are_read_as_cidrs():
    parsed = load(delivery_allowed_networks=" 127.0.0.1/8, ::1/128 ,10.2.0.0/16")
    assert parsed.delivery_allowed_network_list == (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
        ip_network("10.2.0.0/16"),
    )
    assert load().delivery_allowed_network_list == ()


# -- at connect time ------------------------------------------------------------------


def worker(database, allowed: str = "") -> Deliverer:
    return Deliverer(
        database,
        load(
            database_url=database.url,
            delivery_backoff_seconds=60,
            delivery_max_backoff_seconds=60,
            delivery_allowed_networks=allowed,
        ),
    )


def test_a_name_that_resolves_to_loopback_when_sending_is_refused_then(database, receiver):
    # Its URL passed creation when the name pointed elsewhere (the row as stored then);
    # now `localhost` resolves to 127.0.0.1, where the receiver listens.
    url = f"http://localhost:{receiver.port}/events"
    target = insert_target(database, "rebound", "webhook", url, max_attempts=2)
    message_id = owe(database, target)
    before = errors_counted("rebound", "egress_refused")
    strict = worker(database)
    try:
        fail_until_dead(
            database,
            strict,
            target,
            message_id,
            "egress refused: localhost resolves to 127.0.0.1, a loopback address",
        )
    finally:
        strict.stop()
    assert errors_counted("rebound", "egress_refused") - before == 2
    assert receiver.received == []


def test_the_same_target_is_delivered_where_its_network_is_allowed(database, receiver):
    url = f"http://localhost:{receiver.port}/events"
    owe(database, add_target(database, "webhook", url, receiver.secret, egress=LOCAL))
    allowing = worker(database, RECEIVERS)
    try:
        assert allowing.deliver_once().delivered == 1
    finally:
        allowing.stop()
    assert len(receiver.received) == 1
    assert receiver.hosts == [f"localhost:{receiver.port}"]  # the URL's host, not the address


def test_a_target_allowed_when_made_is_refused_once_its_network_no_longer_is(database, receiver):
    target = add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=1)
    message_id = owe(database, target)
    strict = worker(database)  # PROVISIONING_DELIVERY_ALLOWED_NETWORKS emptied since
    try:
        assert strict.deliver_once().dead == 1
    finally:
        strict.stop()
    assert message(database, message_id).last_error == (
        "egress refused: 127.0.0.1 is a loopback address"
    )
    assert receiver.received == []


def test_an_outbound_scim_target_is_held_to_the_policy_too(database, downstream):
    target = insert_target(database, "scim-inside", "scim", downstream.url, max_attempts=1)
    message_id = owe(database, target)
    strict = worker(database)
    try:
        assert strict.deliver_once().dead == 1
    finally:
        strict.stop()
    assert message(database, message_id).last_error.startswith("egress refused: 127.0.0.1")
    assert downstream.groups() == []


def test_a_redirect_is_never_followed(database, receiver):
    elsewhere = WebhookReceiver(receiver.secret)
    try:
        receiver.answer = 307
        receiver.location = elsewhere.url
        target = add_target(database, "webhook", receiver.url, receiver.secret, max_attempts=3)
        message_id = owe(database, target)
        allowing = worker(database, RECEIVERS)
        try:
            assert allowing.deliver_once().failed == 1
        finally:
            allowing.stop()
        assert message(database, message_id).last_error == (
            "HTTP 307 Temporary Redirect (redirects are not followed)"
        )
        assert elsewhere.received == []
    finally:
        elsewhere.stop()


# -- TLS: the certificate is checked against the URL's host, not the address ----------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A certificate authority, and a certificate it signed for `localhost` only."""
    directory = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory


def test_tls_is_checked_against_the_urls_host_name(database, certificates, monkeypatch):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem")
    secure = WebhookReceiver("whsec-test-0123456789", ssl_context=context)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))  # trust the test CA
    try:
        by_name = f"https://localhost:{secure.port}/events"
        by_address = f"https://127.0.0.1:{secure.port}/events"
        named = add_target(database, "webhook", by_name, secure.secret, name="by-name")
        addressed = add_target(database, "webhook", by_address, secure.secret, name="by-address")
        owe(database, named)  # one message to each
        allowing = worker(database, RECEIVERS)
        try:
            done = allowing.deliver_once()
        finally:
            allowing.stop()
        assert (done.delivered, done.failed) == (1, 1)
        with database.reader() as session:
            kept = dict(
                session.execute(select(OutboxMessage.target_id, OutboxMessage.last_error)).all()
            )
        assert kept[named.id] is None
        assert "certificate verify failed" in kept[addressed.id]  # not issued for 127.0.0.1
        assert len(secure.received) == 1
    finally:
        secure.stop()
