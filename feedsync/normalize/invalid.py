"""Why a value is no indicator: ``InvalidValue`` and its reason word for metrics."""

from __future__ import annotations

import ipaddress


class InvalidValue(ValueError):
    """A value that is no indicator; ``reason`` is a short word for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class NetworkValue(InvalidValue):
    """A network of several addresses: no indicator, but its addresses may be
    (exclusions.Screen expands it)."""

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.network = network
        super().__init__("cidr", f"network {network} is not a single address")
