"""A feed's download over HTTP: redirects, bounded decoding, framing, per-hop proxies.

Here redirects are followed by hand (credentials and custom headers stay with
the feed's own origin, and https never falls back to http), Content-Encoding is
decoded with the decoded size bounded by ``max_body_bytes`` (aiohttp neither
bounds an inflating body nor notices a gzip stream without its end), a body's
framing is judged (did the server say where it ends?), each hop goes through
the proxy its URL calls for (feedsync.proxy), and a request that fails becomes
FetchError through feedsync._http.translate, with every URL and secret redacted
(aiohttp's text holds the full URL, query included). A failure that may pass is
a TransientFetchError, which feedsync.sources.retry tries again.
"""

from __future__ import annotations

import contextlib
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from yarl import URL

from feedsync import proxy
from feedsync._http import Failure, client_timeout, ssl_context, translate
from feedsync.config import FeedRetryConfig, ProxyConfig
from feedsync.errors import FetchError, TransientFetchError
from feedsync.metrics import feed_response
from feedsync.proxy import Route
from feedsync.redact import Redacted, plain, redact_text, redact_url

CHUNK = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Only what _Decoder reads: a server must not answer in brotli or zstd.
ACCEPT_ENCODING = "gzip, deflate"
Method = Literal["GET", "POST"]
# A query as a mapping, or as pairs where a name repeats (TAXII's match[...] filters).
Params = Mapping[str, str] | Sequence[tuple[str, str]]
_ENVIRONMENT = ProxyConfig()
_RETRY = FeedRetryConfig()


@dataclass(frozen=True, slots=True)
class Request:
    """How to fetch one feed URL. ``private`` names the headers that are the
    feed's credentials or its own (configured) headers: they go to the feed
    URL's origin only. ``secrets`` are the values no message may show."""

    feed: str
    url: str
    headers: Mapping[str, str]
    verify_tls: bool | str
    timeout: float
    max_bytes: int
    private: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = field(default=(), repr=False)
    proxy: ProxyConfig = _ENVIRONMENT
    retry: FeedRetryConfig = _RETRY

    def hide(self, text: str) -> str:
        return redact_text(text, (*self.secrets, *self.headers.values()))

    def route(self, url: str | URL) -> Route:
        """The proxy route of one hop; FetchError for an unusable environment proxy."""
        try:
            return proxy.route(self.proxy, str(url))
        except proxy.ProxyUnusable as exc:
            raise FetchError(self.feed, f"cannot fetch {redact_url(str(url))}: {exc}") from None


def origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


def same_origin(a: str, b: str) -> bool:
    return origin(URL(a)) == origin(URL(b))


class Client:
    """One feed's HTTP session (``async with``); ``open`` makes a request."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | bool = True
        self._hop = proxy.DIRECT  # the route of the latest hop, for messages
        self._secrets: tuple[str, ...] = (*request.secrets, *request.headers.values())

    async def __aenter__(self) -> Client:
        timeout = self.request.timeout
        self._tls = await ssl_context(self.request.verify_tls)
        self._session = aiohttp.ClientSession(
            timeout=client_timeout(timeout),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @contextlib.asynccontextmanager
    async def open(
        self,
        url: str,
        *,
        method: Method = "GET",
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> AsyncIterator[Response]:
        """The answer to ``url`` after its redirects; reading it inside the block
        is covered too: a body cut short is a FetchError."""
        with translate(self._failed(redact_url(url)), lambda: self._secrets):
            response = await self._follow(method, url, params, headers or {}, data)
            try:
                yield Response(self.request, response, self._hop)
            finally:
                response.release()

    async def _follow(
        self,
        method: Method,
        url: str,
        params: Params | None,
        headers: Mapping[str, str],
        data: bytes | None,
    ) -> aiohttp.ClientResponse:
        assert self._session is not None
        home = origin(URL(url))
        current = URL(url)
        trusted = True  # still at the feed's origin: its credentials may go along
        seen: set[str] = set()
        for _hop in range(MAX_REDIRECTS + 1):
            # Each hop its own route: a Location may lead to a host NO_PROXY lists.
            self._hop = hop = self.request.route(current)
            sent = {**self._headers(trusted), **headers, "Accept-Encoding": ACCEPT_ENCODING}
            sent |= hop.forward(current)
            self._secrets = (*self._secrets, *hop.secrets)
            where = redact_url(str(current)) + hop.via
            try:
                response = await self._session.request(
                    method,
                    current,
                    params=params,
                    headers=sent,
                    data=data,
                    ssl=self._tls,
                    allow_redirects=False,
                    proxy=hop.proxy,
                    proxy_headers=hop.tunnel(current),
                )
            except ValueError as exc:  # a header value or URL aiohttp will not send
                raise self._error(f"cannot fetch {where}: {self._why(exc)}") from self._hidden(exc)
            refused = proxy.answered(hop, response.status)
            if refused is not None:
                response.release()
                raise self._error(f"cannot fetch {redact_url(str(current))}: {refused}")
            feed_response(self.request.feed, response.status)
            if response.status not in REDIRECTS:
                return response
            response.release()
            seen.add(str(response.url))
            target = self._redirect(method, response, seen)
            trusted = trusted and origin(target) == home
            current, params = target, None  # a Location carries its own query
        raise self._error(f"more than {MAX_REDIRECTS} redirects from {redact_url(url)}")

    def _redirect(self, method: Method, response: aiohttp.ClientResponse, seen: set[str]) -> URL:
        here = redact_url(str(response.url))
        location = response.headers.get("Location")
        if not location:
            raise self._error(f"HTTP {response.status} from {here} names no Location")
        try:
            target = response.url.join(URL(location))
        except ValueError as exc:
            raise self._error(
                f"HTTP {response.status} from {here}: bad Location"
            ) from self._hidden(exc)
        there = redact_url(str(target))
        if target.scheme not in ("http", "https"):
            raise self._error(f"{here} redirects to {there}, which is not http(s)")
        if response.url.scheme == "https" and target.scheme != "https":
            raise self._error(f"{here} redirects to {there}: refusing to leave https for http")
        if str(target) in seen:
            raise self._error(f"redirect loop: {here} leads back to {there}")
        if method == "POST" and response.status not in (307, 308):
            # 301/302/303 would turn the search into a GET that answers something else.
            raise self._error(
                f"{here} answers the POST with HTTP {response.status} to {there}:"
                " set the feed's url to where it points"
            )
        return target

    def _headers(self, trusted: bool) -> dict[str, str]:
        headers = dict(self.request.headers)
        if not trusted:
            for name in self.request.private:
                headers.pop(name, None)
        return headers

    def _hide(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _why(self, exc: BaseException) -> str:
        return self._hide(plain(str(exc)) or type(exc).__name__)

    def _hidden(self, exc: BaseException) -> Redacted:
        return Redacted.of(exc, self._secrets)

    def _error(self, message: str) -> FetchError:
        return FetchError(self.request.feed, message)

    def _failed(self, where: str) -> Callable[[Failure], FetchError]:
        # The route is read at the failure: the hop that failed may be a redirect's.
        return lambda failure: fetch_failure(
            self.request.feed, where, self._hop, self.request.timeout, failure
        )


def fetch_failure(
    feed: str, where: str, route: Route, timeout: float, failure: Failure
) -> FetchError:
    """A feed's request to ``where`` that did not complete, as the FetchError it
    stands for: a TransientFetchError where trying again may help."""
    kind = TransientFetchError if failure.transient else FetchError
    via = route.via
    if failure.kind == "framing":
        why = f"the answer breaks HTTP framing ({failure.reason})"
        return kind(feed, f"body from {where}{via} was cut short: {why}")
    if failure.kind == "cut_short":
        return kind(feed, f"body from {where}{via} was cut short: {failure.reason}")
    if failure.kind == "timeout":
        return kind(feed, f"cannot fetch {where}{via}: no answer within {timeout:g} s")
    if failure.kind == "file":
        return kind(feed, f"cannot spool the body of {where}: {failure.reason}")
    return kind(feed, f"cannot fetch {where}{via}: {failure.said(route)}")


def failed(feed: str, where: str, route: Route, timeout: float) -> Callable[[Failure], FetchError]:
    """``translate``'s ``errors`` for a feed's request to ``where`` through ``route``."""
    return lambda failure: fetch_failure(feed, where, route, timeout, failure)


class Response:
    """An answer whose body is read decoded, and bounded by ``max_body_bytes``."""

    def __init__(
        self, request: Request, response: aiohttp.ClientResponse, route: Route = proxy.DIRECT
    ) -> None:
        self.request = request
        self.raw = response
        self.status = response.status
        self.headers = response.headers
        self.where = redact_url(str(response.url))
        self.via = route.via  # " via proxy ..." when it came through one

    @property
    def framed(self) -> bool:
        """Whether the server said where the body ends (a length, or chunks): a
        body that ends by the connection closing may have been cut anywhere."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        return chunked or self.raw.content_length is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The decoded body, a piece at a time; FetchError past ``max_body_bytes``
        (as declared, on the wire, or decoded) or for an encoding cut short."""
        limit = self.request.max_bytes
        declared = self.raw.content_length
        if declared is not None and declared > limit:
            raise self._over(f"body of {declared} bytes is over the limit of {limit} bytes")
        decoder = _Decoder(self.headers.get("Content-Encoding", ""), self)
        size = 0
        async for chunk in self._wire(limit):
            for piece in decoder.decode(chunk):
                size += len(piece)
                if size > limit:
                    raise self._over(f"body inflates to over the limit of {limit} bytes")
                yield piece
        decoder.finish()

    async def _wire(self, limit: int) -> AsyncIterator[bytes]:
        wire = 0
        async for chunk in self.raw.content.iter_chunked(CHUNK):
            wire += len(chunk)
            if wire > limit:
                raise self._over(f"body is over the limit of {limit} bytes")
            yield chunk

    async def read(self) -> bytes:
        """The whole decoded body (bounded as ``chunks`` is)."""
        return b"".join([piece async for piece in self.chunks()])

    def _over(self, message: str) -> FetchError:
        return FetchError(self.request.feed, f"{message} ({self.where})")


class _Decoder:
    """Content-Encoding undone, at most CHUNK bytes out at a time, and the end of
    a gzip or deflate stream required: without it the body was cut short."""

    def __init__(self, encoding: str, response: Response) -> None:
        self.kind = encoding.strip().lower()
        self.response = response
        self.inflater: zlib._Decompress | None = None
        self.fed = False  # an empty body is empty, not a stream cut short
        if self.kind in ("gzip", "x-gzip"):
            self.inflater = zlib.decompressobj(wbits=31)
        elif self.kind not in ("", "identity", "deflate"):
            raise FetchError(
                response.request.feed,
                f"{response.where} answered in Content-Encoding {self.kind!r},"
                " which feedsync does not read",
            )

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self.kind in ("", "identity"):
            yield data
            return
        self.fed = self.fed or bool(data)
        if self.inflater is None:
            # "deflate" is zlib-wrapped by the RFC, raw by many servers: look.
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self.inflater = zlib.decompressobj(wbits=15 if wrapped else -15)
        try:
            yield from self._inflate(data)
        except zlib.error as exc:
            raise self._broken(f"is not valid {self.kind} ({exc})") from exc

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        assert self.inflater is not None
        while data:
            piece = self.inflater.decompress(data, CHUNK)
            if piece:
                yield piece
            data = self.inflater.unconsumed_tail
            if self.inflater.eof and self.inflater.unused_data:
                if self.kind == "deflate":
                    raise self._broken("has data after the end of its deflate stream")
                # Concatenated gzip members are one body (gzip(1) reads them so).
                data = self.inflater.unused_data
                self.inflater = zlib.decompressobj(wbits=31)

    def finish(self) -> None:
        if self.fed and self.inflater is not None and not self.inflater.eof:
            raise self._broken("was cut short (its stream has no end)")

    def _broken(self, what: str) -> FetchError:
        where = self.response.where
        return FetchError(
            self.response.request.feed, f"{self.kind}-encoded body from {where} {what}"
        )
