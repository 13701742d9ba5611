"""A CyberTrace REST API emulator, for tests, the demo and trying a configuration.

It follows CyberTrace's documentation (the REST API pages of the CyberTrace
help), not feedsync's assumptions, so that a client passing its tests also
works against a real CyberTrace. docs/emulator.md lists every rule it enforces,
with the page and the test that covers it, and the switches for the readings
where the pages are silent or ambiguous (``feedsync.emulator.readings``).

The server and its checks are server.py's, the command line serving.py's.
"""

from __future__ import annotations

from feedsync.emulator._http import LoggedRequest
from feedsync.emulator.model import (
    BUILTIN,
    DEFAULT_TENANT,
    DELETE_LIMIT,
    POST_LIMIT,
    PUT_LIMIT,
    EmulatedIndicator,
    EmulatedSupplier,
)
from feedsync.emulator.readings import Readings
from feedsync.emulator.server import Emulator
from feedsync.emulator.serving import add_arguments, serve, serve_from

__all__ = [
    "BUILTIN",
    "DEFAULT_TENANT",
    "DELETE_LIMIT",
    "POST_LIMIT",
    "PUT_LIMIT",
    "EmulatedIndicator",
    "EmulatedSupplier",
    "Emulator",
    "LoggedRequest",
    "Readings",
    "add_arguments",
    "serve",
    "serve_from",
]
