"""The poison guard's canary set: values no honest feed suddenly lists.

A feed that starts listing 8.8.8.8, a public resolver's name or the operator's
own networks has been poisoned or broken (bitwire-it/ipblocklist#11 took a
network's SIP trunks down that way); blocking on it would cut the network off
from itself. Such a fetch is held beside the shrink guard (store/guard.py):
applied once the next fetch yields the very same change, or by
``feedsync sync FEED --force``. A value that must never be sent belongs on the
allowlist, which excludes it for good.

Entries are written as allowlist entries are (allowlist.py); the name
``public_resolvers`` stands for the set below and ``own_hosts`` for the
hosts of feedsync's own peers; both are the default.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from types import MappingProxyType

from feedsync.model import Kind
from feedsync.safety.allowlist import allow_screen, parsed
from feedsync.safety.checks import url_host

REASON = "canary"
# The anycast addresses and names of the large public DNS resolvers (Google,
# Cloudflare, Quad9, OpenDNS, AdGuard, CleanBrowsing, Level3/Lumen).
PUBLIC_RESOLVERS = (
    "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844", "dns.google",
    "1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "one.one.one.one", "cloudflare-dns.com",
    "9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9", "dns.quad9.net",
    "208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53",
    "dns.opendns.com",
    "94.140.14.14", "94.140.15.15", "dns.adguard-dns.com",
    "185.228.168.9", "185.228.169.9",
    "4.2.2.1", "4.2.2.2",
)  # fmt: skip
# "own_hosts": the hosts of feedsync's own peers, from the configuration (Config.own_hosts):
# CyberTrace, the proxies, the MISP and TAXII servers. A feed that lists them is one
# block away from cutting the SOC off from its own tools.
OWN_HOSTS = "own_hosts"
CANARY_SETS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"public_resolvers": PUBLIC_RESOLVERS, OWN_HOSTS: ()}
)
DEFAULT_CANARIES = ("public_resolvers", OWN_HOSTS)

Canaries = Callable[[str, str], str | None]  # (kind, canonical value) -> the entry's reason
_URL = str(Kind.URL)
_NAMED = frozenset(str(kind) for kind in (Kind.IPV4, Kind.IPV6, Kind.DOMAIN))
_HASHES = frozenset(str(kind) for kind in (Kind.MD5, Kind.SHA1, Kind.SHA256))


def canaries(entries: tuple[str, ...], own_hosts: tuple[str, ...] = ()) -> Canaries | None:
    """What tells a canary value (by its kind's name and canonical text), or None
    for an empty set; ``own_hosts`` is what the set of that name stands for."""
    sets = {**CANARY_SETS, OWN_HOSTS: own_hosts}
    values = tuple(v for entry in entries for v in sets.get(entry, (entry,)))
    if not values:
        return None
    return plain_canaries(values) or screened_canaries(values)


def screened_canaries(values: tuple[str, ...]) -> Canaries:
    """The canary check of any set: its allowlist screen's check of the value's kind."""
    checks = {str(kind): check for kind, check in allow_screen(values, REASON).checks.items()}

    def canary(kind: str, value: str) -> str | None:
        check = checks.get(kind)
        return None if check is None else check(value)

    return canary


@functools.lru_cache(maxsize=64)
def plain_canaries(values: tuple[str, ...]) -> Canaries | None:
    """The canary check of a set of names, single addresses and hashes only (the
    default set, and peers named by host), or None for a set with a network,
    ``*.`` name or URL: a value, or a URL's host, is a canary if it is in the set.

    One set lookup a value, where the screen's check walks a name's labels or
    bisects an address table: it runs for every row a first load adds."""
    found = parsed(values)
    if found.domains or found.prefixes:
        return None
    names = set(found.hosts)
    for text in found.networks:
        network = ipaddress.ip_network(text)
        if network.num_addresses != 1:
            return None
        names.add(str(network.network_address))
    plain, hashes = frozenset(names), frozenset(found.exact)

    def canary(kind: str, value: str) -> str | None:
        if kind == _URL:
            host = url_host(value)
            if host.startswith("["):
                host = host[1:-1]
            return REASON if host in plain else None
        if kind in _NAMED:
            return REASON if value in plain else None
        if kind in _HASHES:
            return REASON if value in hashes else None
        return None

    return canary
