"""What the daemon opens before it serves: the CyberTrace client, a checked store.

A failure here is a clear error before anything is scheduled: TLS files that do
not load are a ConfigError naming the keys, a damaged state database is
StoreCorrupt with the advice of what to do.
"""

from __future__ import annotations

import time

from feedsync import logs
from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.errors import ConfigError, StoreCorrupt
from feedsync.store import Store
from feedsync.store.statefile import ADVICE
from feedsync.sync import metered_client

log = logs.get("feedsync.daemon")


async def open_client(config: Config) -> CyberTrace:
    """An open CyberTrace client; TLS files that do not load are a ConfigError."""
    client = metered_client(config)
    try:
        return await client.__aenter__()
    except OSError as exc:  # ssl.SSLError among them: not PEM, a wrong key, unreadable
        raise ConfigError(
            "cybertrace", f"the TLS files (verify_tls, client_cert, client_key) do not load: {exc}"
        ) from exc


def check_store(store: Store) -> None:
    """Raise StoreCorrupt unless the state database passes SQLite's quick_check."""
    started = time.monotonic()
    damage = store.quick_check()
    if damage:
        raise StoreCorrupt(
            f"state database {store.path} fails SQLite's quick_check: {'; '.join(damage)}. {ADVICE}"
        )
    log.info("state.checked", path=store.path, seconds=round(time.monotonic() - started, 2))
