"""HTTP plumbing every remote shares: the user agent, Basic authentication and the TLS context."""

from __future__ import annotations

import asyncio
import base64
import ssl

from feedsync import __version__

USER_AGENT = f"feedsync/{__version__}"


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic authentication."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def ssl_context(verify_tls: bool | str) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp; loading a CA bundle reads files, so off the loop."""
    if verify_tls is False:
        return False
    cafile = verify_tls if isinstance(verify_tls, str) else None
    return await asyncio.to_thread(ssl.create_default_context, cafile=cafile)
