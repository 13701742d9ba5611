"""IP addresses as CyberTrace stores them: plain, with a port, bracketed, single-host CIDR.

A network of several addresses is no indicator but is told apart
(``NetworkValue``), so that the exclusions can expand it.
"""

from __future__ import annotations

import ipaddress
import re

from feedsync.model import Kind
from feedsync.normalize.invalid import NetworkValue

PORT = re.compile(r"(?::[0-9]*)?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def address_of(text: str) -> tuple[Kind, str] | None:
    """A plain IP address, ``ip:port``, ``[v6]``, ``[v6]:port`` or a single-host
    CIDR; None if ``text`` is none of these (a URL with an address host, say)."""
    candidate = text
    if candidate.startswith("["):
        end = candidate.find("]")
        if end < 0 or not PORT.fullmatch(candidate, end + 1):
            return None
        return bracketed(candidate[1:end])
    if candidate.count(":") == 1 and candidate.count(".") == 3:
        candidate, _, port = candidate.partition(":")
        if not port.isascii() or not port.isdigit():
            return None
    if "/" in candidate:
        return _network(candidate)
    if DOTTED_QUAD.fullmatch(candidate):
        return Kind.IPV4, candidate  # already canonical: no leading zeros, each octet <= 255
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return _ip_kind(address), str(address)


def bracketed(text: str) -> tuple[Kind, str] | None:
    try:
        return Kind.IPV6, str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def _network(text: str) -> tuple[Kind, str] | None:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if network.num_addresses != 1:
        raise NetworkValue(network)
    return _ip_kind(network.network_address), str(network.network_address)


def _ip_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Kind:
    return Kind.IPV4 if address.version == 4 else Kind.IPV6
