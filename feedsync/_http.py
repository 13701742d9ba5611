"""HTTP plumbing every remote shares: the user agent, Basic authentication and the TLS context."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl

from feedsync import __version__

USER_AGENT = f"feedsync/{__version__}"


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic authentication."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def ssl_context(verify_tls: bool | str) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp; loading a CA bundle reads files, so off the loop.

    Contexts are shared: loading the system's CA store costs some 25 ms of CPU,
    which a context per fetch paid 200 times in a cycle of 200 feeds. A CA file
    is loaded again when its size or modification time changes (a rotated
    bundle is used from the next fetch on); the system store is loaded once
    per process."""
    if verify_tls is False:
        return False
    cafile = verify_tls if isinstance(verify_tls, str) else None
    return await asyncio.to_thread(_shared_context, cafile)


_CONTEXTS: dict[tuple[str | None, int, int], ssl.SSLContext] = {}


def _shared_context(cafile: str | None) -> ssl.SSLContext:
    stamp = (0, 0)
    if cafile is not None:
        try:
            stat = os.stat(cafile)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            pass  # create_default_context says what is wrong with it
    key = (cafile, *stamp)
    context = _CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=cafile)
        if cafile is not None:
            for old in [k for k in _CONTEXTS if k[0] == cafile]:
                del _CONTEXTS[old]
        _CONTEXTS[key] = context
    return context
