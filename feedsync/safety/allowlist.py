"""Local allowlists: the operator's own values, which no feed sends to CyberTrace.

Entries come from files (one a line, ``#`` starts a comment) and from the
configuration. What an entry matches depends on how it is written:

- an address or a network (``20.1.2.3``, ``20.1.0.0/16``): the addresses in it,
  and URLs on them; a network with host bits set is refused, never widened;
- a name (``corp.example``): that name, and URLs on it;
- ``*.corp.example`` (or ``.corp.example``): the name, every name under it, and
  URLs on them;
- a URL (``corp.example/login``): every URL starting with it once both are
  canonical (a trailing ``/`` is kept: ``corp.example/app/`` matches what is
  under it, not ``corp.example/application``);
- an MD5, SHA1 or SHA256: that hash.

A file is read again when its modification time or size changes; a line that
is no entry is logged with its file and line number and skipped, the others
apply. An allowlisted value is excluded with the reason ``allowlist``: counted,
logged and deleted from its supplier if it was sent, like any exclusion.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import os
from dataclasses import dataclass

import structlog

from feedsync.errors import FeedsyncError
from feedsync.model import Kind
from feedsync.normalize import InvalidValue, canonicalize
from feedsync.safety.checks import Check
from feedsync.safety.exclusions import Entries, Screen, compose, network_span

log = structlog.get_logger("feedsync.allowlist")

REASON = "allowlist"
_HASHES = (Kind.MD5, Kind.SHA1, Kind.SHA256)


class AllowlistError(FeedsyncError):
    """An allowlist file that cannot be read: the feed is not applied without it,
    since what it allows would otherwise be sent."""


@dataclass(frozen=True, slots=True)
class Allowlist:
    """A feed's allowlist settings: the files and the inline values, as configured."""

    files: tuple[str, ...] = ()
    values: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.values)


@dataclass(frozen=True, slots=True)
class Parsed:
    """Entries sorted by what they match, all canonical."""

    networks: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()


def parse_entry(text: str) -> tuple[str, str]:
    """(field of ``Parsed``, canonical value) of one entry; ValueError says why not."""
    value = text.strip()
    under = value.startswith(("*.", "."))
    if under:
        value = value[2:] if value.startswith("*.") else value[1:]
    if not under and ("/" in value or value[:1].isdigit() or ":" in value):
        try:
            return "networks", str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            if "host bits set" in str(exc):
                raise ValueError(f"{text.strip()!r} has host bits set (not widened)") from None
    try:
        kind, canonical = canonicalize(value)
    except InvalidValue as exc:
        raise ValueError(f"{text.strip()!r} is no allowlist entry ({exc.reason})") from None
    if under and kind is not Kind.DOMAIN:
        raise ValueError(f"{text.strip()!r}: only a name can take '*.'")
    if kind is Kind.DOMAIN:
        return ("domains" if under else "hosts"), canonical
    if kind is Kind.URL:
        return "prefixes", canonical + ("/" if value.endswith("/") else "")
    if kind in _HASHES:
        return "exact", canonical
    return "networks", canonical  # an address canonicalize had to refang or unbracket


def parsed(values: tuple[str, ...]) -> Parsed:
    """``values`` (each a valid entry) sorted by field."""
    out: dict[str, list[str]] = {f.name: [] for f in dataclasses.fields(Parsed)}
    for value in values:
        kind, canonical = parse_entry(value)
        out[kind].append(canonical)
    return Parsed(**{name: tuple(sorted(set(items))) for name, items in out.items()})


# path -> ((mtime_ns, size), the file's valid entries)
_READ: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {}


def file_entries(path: str) -> tuple[str, ...]:
    """The valid entries of the file at ``path``, read again only when it changed."""
    try:
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        known = _READ.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AllowlistError(f"allowlist {path}: {exc}") from exc
    kept: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            parse_entry(text)
        except ValueError as exc:
            log.warning("allowlist.bad_line", file=path, line=number, error=str(exc))
            continue
        kept.append(text)
    _READ[path] = (stamp, tuple(kept))
    log.info("allowlist.read", file=path, entries=len(kept))
    return tuple(kept)


def entries(allow: Allowlist) -> tuple[str, ...]:
    """Every entry of ``allow``: its inline values, then its files'."""
    values = list(allow.values)
    for path in allow.files:
        values.extend(file_entries(path))
    return tuple(values)


@functools.lru_cache(maxsize=64)
def allow_screen(values: tuple[str, ...], reason: str = REASON) -> Screen:
    """The screen of these entries (their reason ``reason``), built once per set."""
    found = parsed(values)
    entry = Entries(
        reason,
        networks=tuple(network_span(n, reason) for n in found.networks),
        domains=found.domains,
        exact=found.exact,
        hosts=found.hosts,
        prefixes=found.prefixes,
    )
    digest = hashlib.sha256(repr((reason, found)).encode()).hexdigest()[:16]
    return compose((), (entry,), 0, digest)


def with_allowlist(base: Screen, allow: Allowlist) -> Screen:
    """``base`` with ``allow``'s entries checked first (their reason wins)."""
    if not allow:
        return base
    return _combined(base, allow_screen(entries(allow)))


def fingerprint_with(base: str, allow: Allowlist) -> str:
    """The fingerprint of a screen ``with_allowlist`` makes from one of fingerprint
    ``base``, without building it (reading the files, cached by their stamp)."""
    if not allow:
        return base
    return _joined(base, allow_screen(entries(allow)).fingerprint)


def _joined(base: str, first: str) -> str:
    return hashlib.sha256(f"{base}:{first}".encode()).hexdigest()[:16]


_COMBINED: dict[tuple[str, str], Screen] = {}


def _combined(base: Screen, first: Screen) -> Screen:
    known = _COMBINED.get((base.fingerprint, first.fingerprint))
    if known is not None:
        return known
    checks = {kind: _chain(first.checks[kind], check) for kind, check in base.checks.items()}
    fingerprint = _joined(base.fingerprint, first.fingerprint)
    screen = dataclasses.replace(base, checks=checks, fingerprint=fingerprint, before=first)
    if len(_COMBINED) > 64:
        _COMBINED.clear()
    _COMBINED[(base.fingerprint, first.fingerprint)] = screen
    return screen


def _chain(first: Check, then: Check) -> Check:
    def check(value: str) -> str | None:
        reason = first(value)
        return then(value) if reason is None else reason

    return check
