"""The HTTP layer every remote shares: user agent, Basic auth, TLS context, timeouts, translate().

``translate()`` is the one place that reads aiohttp's exceptions (and the
timeouts and ``OSError`` that come with a request): each request of a source or
of the CyberTrace client runs inside it, and whatever escapes becomes a
:class:`Failure` that the caller's ``errors`` turns into its own branch of the
feedsync tree (FetchError or TransientFetchError for a feed, TLSError,
AuthError or TransportError for CyberTrace). As in httpx's exception mapping,
a table decides, and the most specific class wins: here the first class of the
exception's MRO the table names, because aiohttp's classes inherit from both
``ClientError`` and ``OSError`` (or ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import aiohttp

from feedsync import __version__
from feedsync.errors import FeedsyncError
from feedsync.proxy import Route
from feedsync.redact import Redacted, plain, redact_text

__all__ = [
    "USER_AGENT",
    "Failure",
    "FailureKind",
    "basic_auth",
    "client_timeout",
    "ssl_context",
    "translate",
]

USER_AGENT = f"feedsync/{__version__}"

FailureKind = Literal[
    "timeout",  # no answer (or no next piece of it) in time
    "tls",  # the certificate does not verify: the same each time
    "proxy_refused",  # the proxy answered the CONNECT with other than 200
    "proxy_unreachable",  # the proxy itself could not be reached
    "framing",  # aiohttp's parser: a broken status line, header or chunk
    "cut_short",  # the connection ended mid-body
    "connection",  # the server could not be reached, or the connection broke
    "file",  # a local file (the spool) could not be made, written or read
    "request",  # anything else aiohttp refuses: the next try fails alike
]

# The kinds a retry may get past; a refused tunnel is one unless it asked for credentials.
_TRANSIENT: frozenset[FailureKind] = frozenset({"timeout", "cut_short", "connection"})

_KINDS: dict[type[BaseException], FailureKind] = {
    aiohttp.ClientError: "request",
    aiohttp.ClientConnectionError: "connection",
    aiohttp.ClientPayloadError: "cut_short",
    # Without raise_for_status a ClientResponseError is aiohttp's parser, not the
    # server: it reports a broken status line, header or chunk as if a 400 had come.
    aiohttp.ClientResponseError: "framing",
    # Its subclasses are not the parser: a session that follows redirects gave up,
    # or a body was not the type asked for.
    aiohttp.TooManyRedirects: "request",
    aiohttp.ContentTypeError: "request",
    aiohttp.ClientSSLError: "tls",
    aiohttp.ClientHttpProxyError: "proxy_refused",
    aiohttp.ClientProxyConnectionError: "proxy_unreachable",
    aiohttp.ServerTimeoutError: "timeout",
    TimeoutError: "timeout",  # asyncio's too (the same class since 3.11)
    OSError: "file",  # one without a file name is a socket's: see _kind
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that did not complete, in feedsync's words: its kind, why (one
    line, secrets redacted; empty for a timeout, whose limit the caller knows) and,
    for a refused tunnel, the proxy's status."""

    kind: FailureKind
    reason: str
    status: int | None = None

    @property
    def transient(self) -> bool:
        """Whether trying again may help (a 407 from the proxy asks for credentials)."""
        if self.kind == "proxy_refused":
            return self.status != 407
        return self.kind in _TRANSIENT

    def said(self, route: Route) -> str:
        """The reason for a message, naming the proxy where the proxy failed."""
        if self.kind == "proxy_refused":
            return f"proxy {route.shown} refused the tunnel: {self.reason}"
        if self.kind == "proxy_unreachable":
            return f"cannot reach proxy {route.shown}: {self.reason}"
        return self.reason


Errors = Callable[[Failure], FeedsyncError]


@contextlib.contextmanager
def translate(
    errors: Errors, secrets: Iterable[str] | Callable[[], Iterable[str]] = ()
) -> Iterator[None]:
    """Run a request (and the reading of its answer); an aiohttp error, a timeout
    or an ``OSError`` leaves as ``errors(failure)``, chained to a redacted copy of
    the original (whose text may hold the URL's query: a token). ``secrets`` may
    be a callable, read at the failure: a redirect hop adds its proxy's. A
    FeedsyncError raised inside passes unchanged."""
    try:
        yield
    except FeedsyncError:
        raise
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        hidden = tuple(secrets() if callable(secrets) else secrets)
        raise errors(failure_of(exc, hidden)) from Redacted.of(exc, hidden)


def failure_of(exc: BaseException, secrets: tuple[str, ...] = ()) -> Failure:
    """What ``exc`` stands for."""
    kind = _kind(exc)
    if kind == "timeout":
        return Failure(kind, "")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        said = f" {exc.message}" if exc.message else ""
        hint = " (check the proxy's username and password)" if exc.status == 407 else ""
        return Failure(kind, f"HTTP {exc.status}{said}{hint}", exc.status)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return Failure(kind, exc.os_error.strerror or type(exc.os_error).__name__)
    if kind == "framing" and isinstance(exc, aiohttp.ClientResponseError):
        return Failure(kind, redact_text(exc.message.partition("\n")[0].rstrip(":"), secrets))
    if kind == "file" and isinstance(exc, OSError):
        return Failure(kind, f"{exc.filename}: {exc.strerror or type(exc).__name__}")
    return Failure(kind, redact_text(plain(str(exc)) or type(exc).__name__, secrets))


def _kind(exc: BaseException) -> FailureKind:
    for cls in type(exc).__mro__:
        kind = _KINDS.get(cls)
        if kind == "file" and getattr(exc, "filename", None) is None:
            return "connection"  # a socket's OSError (a reset, a refused connect) names no file
        if kind is not None:
            return kind
    return "request"


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic authentication."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A feed's timeouts for aiohttp: ``seconds`` to connect and for each read, no
    total (the feed's whole download is bounded by its deadline, feedsync.sync.fetching)."""
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)


async def ssl_context(
    verify_tls: bool | str, *, certificate: tuple[str, str | None] | None = None
) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp; loading a CA bundle reads files, so off the loop.

    ``True`` (the system's CA store) is aiohttp's own verified context, which it
    builds at its import: building another cost some 27 ms of CPU a process.
    Contexts of a CA file are shared: a context per fetch paid that 200 times in
    a cycle of 200 feeds. A CA file is loaded again when its size or
    modification time changes (a rotated bundle is used from the next fetch
    on). A client ``certificate`` (its file, and its key's where apart) gets a
    context no one else uses: loaded into a shared one, it would be shown to
    every feed's server too."""
    if certificate is not None:
        return await asyncio.to_thread(_own_context, verify_tls, certificate)
    if verify_tls is False:
        return False
    cafile = verify_tls if isinstance(verify_tls, str) else None
    if cafile is None:
        return True
    return await asyncio.to_thread(_shared_context, cafile)


def _own_context(verify_tls: bool | str, certificate: tuple[str, str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=verify_tls if isinstance(verify_tls, str) else None)
    if verify_tls is False:
        # Verification off still shows a client certificate: a server that asks
        # for one refuses a client without it.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(*certificate)
    return context


_CONTEXTS: dict[tuple[str, int, int], ssl.SSLContext] = {}


def _shared_context(cafile: str) -> ssl.SSLContext:
    stamp = (0, 0)
    try:
        stat = os.stat(cafile)
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        pass  # create_default_context says what is wrong with it
    key = (cafile, *stamp)
    context = _CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=cafile)
        for old in [k for k in _CONTEXTS if k[0] == cafile]:
            del _CONTEXTS[old]
        _CONTEXTS[key] = context
    return context
