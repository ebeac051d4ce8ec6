"""Where delivery may connect: public addresses, plus the networks an operator allows.

A target's URL is an address the service will connect to on an administrator's
word; unchecked, the delivery worker would reach whatever the service's host
can: its own admin ports, the database, a cloud metadata service. So every
address a target's host resolves to must be allowed, checked twice:

- when a target is created or its URL changed (the admin API answers 422
  naming the address and why), and
- on every connection, on the address the connection is then made to
  (:mod:`provisioning.delivery.transport`), so that a name resolving to a
  public address at creation and to ``127.0.0.1`` later (DNS rebinding) is
  still refused.

Refused by default: loopback, link-local (``169.254.0.0/16``, ``fe80::/10``),
private (RFC 1918), shared (``100.64.0.0/10``, CGNAT), unique-local
(``fc00::/7``), multicast, unspecified and every other special-purpose range
that is not globally routable, and those forms of IPv4 inside IPv6
(``::ffff:127.0.0.1``, ``::127.0.0.1``, 6to4, NAT64). Networks listed in
``PROVISIONING_DELIVERY_ALLOWED_NETWORKS`` are allowed (an internal receiver).
Cloud metadata services (by name or address) are refused even then: no
target is ever one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from provisioning.delivery.message import DeliveryFailed, Failure

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)

_NAT64 = ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ip_network("::/96")
_SHARED = ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ip_network("fc00::/7")
_PRIVATE = tuple(ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class EgressRefused(DeliveryFailed):
    """The policy does not let delivery connect there; the text names the address and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(Failure.EGRESS_REFUSED, f"egress refused: {reason}")
        self.reason = reason


def ipv4_inside(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return IPv4Address(int(address) & 0xFFFFFFFF)  # not :: and ::1, IPv6's own
    return None


def internal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (an article and a noun), or None if it is."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, IPv6Address):
        inner = ipv4_inside(address)
        if inner is not None:
            why = internal(inner)
            return f"{why} inside IPv6" if why else None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED:
        return "a shared (CGNAT) address"
    if address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if any(address in network for network in _PRIVATE):
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (OSError if none)."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class Egress:
    """The policy: public addresses, and those in ``allowed`` (cloud metadata never)."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why delivery may not connect to ``address``; None when it may."""
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if self.listed(address):
            return None
        return internal(address)

    def listed(self, address: IPAddress) -> bool:
        """Whether ``address`` (or the IPv4 address inside it) is in an allowed network."""
        forms = [address]
        if isinstance(address, IPv6Address) and (inner := ipv4_inside(address)) is not None:
            forms.append(inner)
        return any(form in network for form in forms for network in self.allowed)

    def all_listed(self, host: str, port: int) -> bool:
        """Whether ``host`` resolves, and only to allowed networks' addresses (never a
        metadata one): where an operator vouched for the receiver, plain http may go."""
        try:
            found = self.addresses(host, port)
        except (OSError, EgressRefused):
            return False
        return all(self.listed(address) for address in found)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``: all it resolves to, when all are allowed.

        Raises :class:`EgressRefused` naming the first refused address (or a
        metadata name), and ``OSError`` when ``host`` does not resolve.
        """
        if host.rstrip(".").lower() in METADATA_NAMES:
            raise EgressRefused(f"{host} is a cloud metadata name")
        found = resolve(host, port)
        for address in found:
            why = self.refusal(address)
            if why is not None:
                if address == _literal(host):
                    raise EgressRefused(f"{host} is {why}")
                raise EgressRefused(f"{host} resolves to {address}, {why}")
        return found

    def check_url(self, url: str) -> None:
        """Refuse a target URL whose host resolves to an address delivery may not reach.

        A host that does not resolve now is let through: nothing can be
        reached there yet, and every connection is checked when it is made.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            self.addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
        except OSError:
            return
