"""The exception tree: every error feedsync raises, under FeedsyncError.

Every error that leaves a feedsync module is one of these; third-party
exceptions (aiohttp, sqlite3, yaml, ...) are translated once, where they enter,
with ``raise ... from exc``::

    FeedsyncError
    ├── ConfigError            the configuration is invalid (names the key path)
    ├── SourceError            a feed could not be fetched or parsed; its snapshot is untouched
    │   ├── FetchError         transport: HTTP status, connection, truncated body
    │   │   └── TransientFetchError  one that may pass (connection, timeout, 408/425/429, 5xx)
    │   └── ParseError         the body is not what the feed type promises
    ├── StoreError             the state database cannot be opened, read or written
    │   ├── StoreCorrupt       the state file is empty, damaged or not feedsync's
    │   └── StoreBusy          another feedsync process (the daemon) holds the writers' lock
    ├── ControlError           the daemon's control channel failed (feedsync/control.py)
    └── CyberTraceError        the CyberTrace API failed a request
        ├── AuthError          401/403: wrong credentials or role; retrying cannot help
        ├── TLSError           the server's certificate does not verify; retrying cannot help
        ├── RequestError       a request answered with an error status (has .status)
        ├── SupplierGone       the supplier vanished while its plan was being sent
        └── TransportError     connection failure or timeout; the outcome is unknown
"""

from __future__ import annotations


class FeedsyncError(Exception):
    """Base class of every feedsync error."""


class ConfigError(FeedsyncError):
    """The configuration is invalid; the message starts with the key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class SourceError(FeedsyncError):
    """A feed could not be read; the feed's snapshot stays as it was."""

    def __init__(self, feed: str, message: str) -> None:
        self.feed = feed
        self.message = message
        super().__init__(f"feed {feed}: {message}")


class FetchError(SourceError):
    """The feed's body could not be downloaded completely."""


class TransientFetchError(FetchError):
    """A fetch failed in a way that may pass: the connection, a timeout, 408,
    425, 429 or a 5xx; ``retry_after`` is the server's ``Retry-After`` in seconds."""

    def __init__(self, feed: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(feed, message)
        self.retry_after = retry_after


class ParseError(SourceError):
    """The feed's body does not parse as its type."""


class StoreError(FeedsyncError):
    """The state database failed."""


class StoreCorrupt(StoreError):
    """The state file exists but is not a sound feedsync database; starting
    afresh would orphan what it had sent, so nothing runs until a person acts."""


class StoreBusy(StoreError):
    """Another feedsync process holds the state database's writers' lock; the
    CLI then asks that process's control channel, if it answers."""


class ControlError(FeedsyncError):
    """A running daemon's control socket exists but could not be asked."""


class CyberTraceError(FeedsyncError):
    """A CyberTrace request failed."""


class AuthError(CyberTraceError):
    """CyberTrace refused the credentials (401) or the role (403)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class TLSError(CyberTraceError):
    """The server's TLS certificate failed verification."""


class RequestError(CyberTraceError):
    """CyberTrace answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class SupplierGone(CyberTraceError):
    """The supplier a plan was being sent to is no longer in CyberTrace (deleted by
    an operator): nothing sent to it since counts, and it must be created again."""


class TransportError(CyberTraceError):
    """The request did not complete: connection error or timeout."""
