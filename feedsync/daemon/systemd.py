"""systemd integration: sd_notify over $NOTIFY_SOCKET, without libsystemd.

``READY=1`` once the daemon serves, ``RELOADING=1`` then ``READY=1`` again
around a SIGHUP reload, ``STATUS=`` with a short summary,
``WATCHDOG=1`` at half of ``WatchdogSec`` (``$WATCHDOG_USEC``), ``STOPPING=1``
on shutdown. Without ``$NOTIFY_SOCKET`` (not under systemd) all of it is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends sd_notify datagrams to the socket systemd gave us, if any."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, **fields: str) -> None:
        """Send ``KEY=value`` lines, e.g. ``notify(READY="1", STATUS="...")``."""
        if not self.address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        # systemd gone, the socket unreachable or its queue full: nothing to tell,
        # and nothing to fail. Non-blocking: this runs on the event loop, and a
        # systemd that stopped reading must not stop the daemon (a dropped
        # WATCHDOG=1 is sent again at the next half interval).
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.sendto(message, self.address)

    def ready(self, status: str) -> None:
        self.notify(READY="1", STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253 and later) tell this reload from an older one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING="1", MONOTONIC_USEC=str(usec))

    def status(self, status: str) -> None:
        self.notify(STATUS=status)

    def watchdog(self) -> None:
        self.notify(WATCHDOG="1")

    def stopping(self) -> None:
        self.notify(STOPPING="1")
