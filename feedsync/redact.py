"""Secrets kept out of messages: redacted URLs, exception texts and causes.

URLs lose their userinfo and query; the text of third-party exceptions loses
every URL and every known secret.

A feed URL's query (``?key=...``) and userinfo (``user:pass@``) often carry its
credentials, and client libraries put the whole URL, and sometimes header
values, into their exception text. Everything that leaves a source as a
message goes through here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

HIDDEN = "***"
CAUSE_LIMIT = 300  # characters of an exception's text in a log line or the history
# Any scheme://... run up to whitespace or a quote: exception texts quote URLs in
# several ways (url='...', <URL ...>, bare).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# aiohttp's connection errors quote their TLS setting as Python shows it
# ("Cannot connect to host h:443 ssl:<ssl.SSLContext object at 0x7f..>
# [Connection refused]"): no reader can use that, and an address changes each run.
_SSL_SETTING = re.compile(r"(Cannot connect to host \S+) ssl:(?:<[^<>]*>|\S+)")
_OBJECT_REPR = re.compile(r"<([A-Za-z_][\w.]*) object at 0x[0-9a-fA-F]+>")
_SHORTEST_SECRET = 4  # a shorter "secret" would blank out ordinary words
_SHORTEST_QUERY_SECRET = 8


def redact_url(url: str) -> str:
    """The URL without userinfo and query, which may carry credentials."""
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # an unparsable port: show no authority at all
        host, port = "", None
    if ":" in host:
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of a URL that may be credentials: userinfo and query values."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or "", parts.query]
    # A short query value is more likely "csv" or "true" than a key, and would
    # blank out ordinary words of messages.
    found += [v for _name, v in parse_qsl(parts.query) if len(v) >= _SHORTEST_QUERY_SECRET]
    found += [unquote(value) for value in found]
    return tuple(found)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL redacted and every secret replaced by ``***``.
    Longer secrets go first, so one that contains another is hidden whole."""
    text = plain(_URL.sub(lambda match: redact_url(match.group(0)), text))
    for secret in sorted({s for s in secrets if len(s) >= _SHORTEST_SECRET}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def cause(exc: BaseException) -> str:
    """What an exception that is not feedsync's says, fit for a log line and the
    run history: its type and message, URLs redacted (a query or userinfo may hold
    a key), cut short (an over-long uuid or path would otherwise fill the row)."""
    message = redact_text(str(exc))
    if len(message) > CAUSE_LIMIT:
        message = message[:CAUSE_LIMIT] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def plain(text: str) -> str:
    """``text`` without the Python object reprs client libraries put in messages."""
    return _OBJECT_REPR.sub(r"\1", _SSL_SETTING.sub(r"\1", text))


class Redacted(Exception):
    """A third-party exception's type and redacted text, chained as the cause of
    the FetchError that translates it: ``raise ... from exc`` would put the
    original text, URL and query included, into every traceback."""

    @classmethod
    def of(cls, exc: BaseException, secrets: Iterable[str] = ()) -> Redacted:
        return cls(f"{type(exc).__name__}: {redact_text(str(exc), secrets)}")
