"""Reading CyberTrace's answers: statuses, 202 partial successes, error texts, failures.

What an answer or a request that did not complete means for the client
(feedsync.cybertrace), apart from sending it: the documented error objects,
the ``error_indicators`` of a 202, ``Retry-After``, and the branch of the error
tree a failed request stands for (feedsync._http.translate hands it over).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedsync._http import Failure
from feedsync.errors import AuthError, CyberTraceError, RequestError, TLSError, TransportError
from feedsync.proxy import Route


@dataclass(frozen=True, slots=True)
class Answer:
    """A CyberTrace answer: status and parsed JSON body (None if not JSON)."""

    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of an indicator request: the indicators CyberTrace refused.

    ``readable`` is False for a 202 whose body does not say which indicators it
    refused: nothing of such a request counts as confirmed (invariant 1).
    """

    status: int
    errors: dict[str, str] = field(default_factory=dict)
    readable: bool = True
    text: str = ""


def failure_error(method: str, path: str, route: Route, failure: Failure) -> CyberTraceError:
    """A request that did not complete: the outcome is unknown (TransportError)
    unless the certificate or the proxy's credentials are wrong, which no retry mends."""
    if failure.kind == "tls":
        return TLSError(
            f"{method} {path}: TLS verification failed ({failure.reason}); set"
            " cybertrace.verify_tls to the CA bundle that signed the server's certificate"
        )
    if failure.kind == "proxy_refused" and failure.status == 407:
        return AuthError(407, f"{method} {path}: {failure.said(route)}")
    if failure.kind in ("proxy_refused", "proxy_unreachable"):
        return TransportError(f"{method} {path}: {failure.said(route)}")
    reason = failure.reason or "no answer in time"
    return TransportError(f"{method} {path}: {reason}{route.via}")


def error_indicators(body: Any) -> dict[str, str] | None:
    """The refused indicators of a 202 answer, or None where the body does not
    say which they are (not a JSON array of objects, no ``error_indicators``
    list, an entry without an ``indicator`` string, or no entry at all: a
    partial success that names no failure contradicts itself)."""
    if not isinstance(body, list) or not body:
        return None
    errors: dict[str, str] = {}
    for item in body:
        if not isinstance(item, dict):
            return None
        entries = item.get("error_indicators")
        if not isinstance(entries, list):
            return None
        for error in entries:
            if not isinstance(error, dict) or not isinstance(error.get("indicator"), str):
                return None
            reason = error.get("reason")
            errors[error["indicator"]] = (
                reason if isinstance(reason, str) and reason else "refused (no reason given)"
            )
    return errors or None


def status_text(body: Any) -> str:
    """``: status (reason)`` of the first error object of an answer, as documented."""
    first = body[0] if isinstance(body, list) and body else body
    if not isinstance(first, dict):
        return ""
    status, reason = first.get("status"), first.get("reason")
    parts = [str(part)[:200] for part in (status, reason) if isinstance(part, str) and part]
    if not parts:
        return ""
    return ": " + (f"{parts[0]} ({parts[1]})" if len(parts) == 2 else parts[0])


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def answer_error(
    answer: Answer, method: str, what: str, user: str, route: Route
) -> CyberTraceError | None:
    """The error an answer that is no success stands for, or None for a success."""
    if answer.status in (200, 201):
        return None
    if answer.status == 401:
        return AuthError(
            401,
            f"CyberTrace refused the credentials of user {user!r} (401): check"
            " cybertrace.username and the password",
        )
    if answer.status == 403:
        return AuthError(
            403,
            f"CyberTrace user {user!r} may not {method} {what} (403): the account's role"
            " lacks the rights (an Analyst cannot change suppliers or indicators)",
        )
    return RequestError(
        answer.status,
        f"{method} {what}: CyberTrace answered {answer.status}{status_text(answer.body)}"
        f"{route.via}",
    )


def named(item: object) -> bool:
    """Whether an entry of a list answer (suppliers, tags) has its ``name``."""
    return isinstance(item, dict) and isinstance(item.get("name"), str)
