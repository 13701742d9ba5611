"""Reading a mapping of the configuration against its keys' declarations.

``Map`` holds one mapping with its key path (``feeds[2].retry``), so that every
error names where it is; the keys it may hold, their defaults and ranges come from
``feedsync.config.keys``, where each is declared once.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from feedsync.config import keys as registry
from feedsync.config import schedule as _schedule
from feedsync.config import secretfile
from feedsync.config.exclude import ExcludeConfig
from feedsync.config.settings import Secret
from feedsync.errors import ConfigError
from feedsync.safety.allowlist import Allowlist
from feedsync.safety.poison import DEFAULT_CANARIES

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SSL_WHERE = re.compile(r"\s*\(_ssl\.c:\d+\)$")
_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
_KINDS |= {dict: "a mapping", type(None): "nothing"}
_N = TypeVar("_N", int, float)


@dataclass(slots=True)
class Context:
    """What reading any value may need beyond its own mapping."""

    base: Path  # relative paths start here
    source: str
    mode: int | None  # the config file's, when load() read one
    literal: set[str]  # key paths of strings written without ${...}
    warnings: list[str] = field(default_factory=list)
    unset: dict[str, str] | None = None  # load(secrets=False): paths of unset variables
    accepted: dict[str, frozenset[str]] = field(default_factory=dict)  # see accepted_keys
    # The top-level exclude:, what each feed's inherits.
    exclude: ExcludeConfig = field(default_factory=ExcludeConfig)
    allowlist: Allowlist = field(default_factory=Allowlist)  # each feed adds to it
    canaries: tuple[str, ...] = DEFAULT_CANARIES

    def check_inline(self, path: str, instead: str) -> None:
        if path in self.literal and self.mode is not None:
            self.check_mode(path, f"a secret written into {self.source}, which", self.mode, instead)

    def check_mode(self, path: str, what: str, mode: int, instead: str = "") -> None:
        if mode & 0o004:
            advice = f"; use {instead}" if instead else ""
            message = f"{what} is readable by others (mode {mode & 0o777:04o}){advice}"
            self.warnings.append(f"{path}: {message}")


class Map:
    """A mapping being read, with its key path at hand for error messages.

    ``section`` names its keys' declarations in ``feedsync.config.keys`` (``feeds[]``
    with ``feed_type`` for a feed's); None for a mapping of any keys (names, MISP
    filters). A value read without an explicit default takes the declared one.
    """

    def __init__(
        self,
        path: str,
        data: object,
        section: str | None,
        context: Context,
        feed_type: str | None = None,
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {kind(data)}")
        self.path, self.data, self.context, self.section = path, data, context, section
        keys = None if section is None else registry.keys(section, feed_type)
        if keys is not None:
            context.accepted[path] = keys
        for key in data:
            if not isinstance(key, str) or not key:
                raise ConfigError(self.at(key), "keys must be non-empty strings")
            if keys is not None and key not in keys:
                known = ", ".join(sorted(keys))
                raise ConfigError(self.at(key), f"unknown key; known keys: {known}{only(key)}")

    def at(self, key: object) -> str:
        return join(self.path, key)

    def child(self, key: str, section: str | None, *, optional: bool = False) -> Map:
        value = self.data.get(key)
        if value is None and not optional:
            raise ConfigError(self.at(key), "required")
        return Map(self.at(key), {} if value is None else value, section, self.context)

    def declared(self, key: str) -> registry.Key | None:
        """The declaration of ``key``; None in a mapping of any keys."""
        return None if self.section is None else registry.declared(self.section, key)

    def default(self, key: str) -> Any:
        """The declared default as written (``15m``), None for none or a required key."""
        declared = self.declared(key)
        value = None if declared is None else declared.default
        # "supplier_defaults.confidence": another key's value, which the reader passes.
        return None if value == registry.REQUIRED or registry.is_reference(value) else value

    def range(self, key: str, kind: str) -> str:
        """The declared range of ``key``, which must be declared as ``kind``: a reader and
        its declaration that disagree are feedsync's mistake, caught by any load."""
        declared = self.declared(key)
        assert declared is not None and declared.range is not None, key
        assert registry.kind_of(declared) == kind, (self.section, key, kind)
        return declared.range

    def get(self, key: str, kinds: tuple[type, ...], what: str, secret: bool = False) -> Any:
        """The value if present and of one of ``kinds``, else None."""
        value = self.data.get(key)
        # bool is a subclass of int, but true is no count.
        if value is None or (
            isinstance(value, kinds) and (bool in kinds or type(value) is not bool)
        ):
            return value
        # _kind, not _show, for secrets: the wrong-typed value may be the secret itself.
        got = kind(value) if secret else show(value)
        raise ConfigError(self.at(key), f"expected {what}, got {got}")

    def maybe_text(self, key: str, *, secret: bool = False) -> str | None:
        value: str | None = self.get(key, (str,), "a string", secret)
        if value == "":
            raise ConfigError(self.at(key), "must not be empty")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.maybe_text(key) or default or self.default(key)
        if value is None:
            raise ConfigError(self.at(key), "required")
        return value

    def name(
        self, key: str, pattern: re.Pattern[str], rule: str = "", *, key_only: bool = False
    ) -> str:
        value = key if key_only else self.text(key)
        if not pattern.fullmatch(value):
            raise ConfigError(
                self.at(key), f"{show(value)} is not a valid name ({rule or pattern.pattern})"
            )
        return value

    def choice(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        if allowed is None:
            declared = self.declared(key)
            assert declared is not None, key
            allowed = tuple(declared.schema["enum"])
        value = self.data.get(key, self.default(key))
        if isinstance(value, float):
            value = repr(value)  # YAML reads an unquoted 1.2 as a float
        if value is None:
            raise ConfigError(self.at(key), f"required; one of {', '.join(allowed)}")
        if value not in allowed:
            raise ConfigError(self.at(key), f"{show(value)} is not one of {', '.join(allowed)}")
        return str(value)

    def integer(self, key: str, default: int | None = None) -> int:
        interval = self.range(key, "integer")
        value: int | None = self.get(key, (int,), "an integer")
        value = (self.default(key) if default is None else default) if value is None else value
        if value is None:
            raise ConfigError(self.at(key), f"required, in {interval}")
        return within(self.at(key), value, interval)

    def number(self, key: str, interval: str | None = None) -> float:
        """``interval`` for a range that depends on another key (max_delay)."""
        value: float | None = self.get(key, (int, float), "a number")
        if value is not None and not math.isfinite(value):
            raise ConfigError(self.at(key), f"expected a finite number, got {show(value)}")
        value = self.default(key) if value is None else value
        declared = self.range(key, "number")
        return float(within(self.at(key), value, interval or declared))

    def flag(self, key: str) -> bool:
        value = self.maybe_flag(key)
        declared = self.declared(key)
        assert declared is not None and registry.kind_of(declared) == "boolean", key
        default = declared.default
        assert isinstance(default, bool), key
        return default if value is None else value

    def maybe_flag(self, key: str) -> bool | None:
        value: bool | None = self.get(key, (bool,), "true or false")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items: list[object] = self.get(key, (list,), "a list of strings") or []
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item:
                message = f"expected a non-empty string, got {show(item)}"
                raise ConfigError(f"{self.at(key)}[{index}]", message)
        return tuple(str(item) for item in items)

    def secret(self, key: str, feed_type: str | None = None) -> Secret | None:
        declared = self.declared(key)
        required = declared is not None and registry.is_required(declared, feed_type)
        file_key = f"{key}_file"
        if self.data.get(key) is not None and self.data.get(file_key) is not None:
            raise ConfigError(self.at(file_key), f"give {key} or {file_key}, not both")
        unset = self.context.unset  # load(secrets=False): read no secret file, need no variable
        if self.data.get(file_key) is not None:
            return None if unset is not None else Secret(self._read_secret(file_key))
        if unset is not None and self.at(key) in unset:
            del unset[self.at(key)]
            return None
        value = self.maybe_text(key, secret=True)
        if value is None:
            if required:
                raise ConfigError(self.at(key), f"required (or {file_key})")
            return None
        self.context.check_inline(self.at(key), f"${{VAR}} or {file_key}")
        return Secret(value)

    def _read_secret(self, key: str) -> str:
        path = resolve(self.context.base, self.text(key))
        value, mode = secretfile.read(self.at(key), path)
        self.context.check_mode(self.at(key), f"the secret file {path}", mode)
        return value

    def file(self, key: str) -> str | None:
        if self.maybe_text(key) is None:
            return None
        path = resolve(self.context.base, self.text(key))
        if not os.path.isfile(path):
            raise ConfigError(self.at(key), f"{path} is not an existing file")
        return path

    def verify_tls(self) -> bool | str:
        value = self.get("verify_tls", (bool, str), "true, false or the path of a CA bundle")
        if value is None or isinstance(value, bool):
            return value is not False
        path = self.file("verify_tls") or ""
        # Loaded here, so that `check` refuses a bundle the client would fail on, and a
        # reload with one keeps the running configuration.
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError) as exc:
            reason = _SSL_WHERE.sub("", str(exc.args[-1] if exc.args else exc))
            message = f"cannot load {path} as a CA bundle (PEM certificates): {reason}"
            raise ConfigError(self.at("verify_tls"), message) from None
        return path

    def duration(self, key: str, default: float | None = None) -> float:
        """Seconds; ``default`` for one that depends on another key (max_delay)."""
        seconds = self.maybe_duration(key)
        if seconds is not None:
            return seconds
        if default is None:
            default = _schedule.parse_duration(self.default(key))
        return default

    def maybe_duration(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        try:
            seconds = _schedule.parse_duration(value)
        except ValueError as exc:
            raise ConfigError(self.at(key), str(exc)) from None
        return within(self.at(key), seconds, self.range(key, "duration"), shown=value)

    def headers(self) -> tuple[tuple[str, Secret], ...]:
        entries = self.child("headers", None, optional=True)
        found = []
        for name in entries.data:
            entries.name(name, _HEADER_NAME, key_only=True)
            if self.context.unset is not None and entries.at(name) in self.context.unset:
                del self.context.unset[entries.at(name)]
                continue
            value = entries.maybe_text(name, secret=True)
            if value is None or "\n" in value or "\r" in value:
                raise ConfigError(entries.at(name), "expected a one-line string")
            self.context.check_inline(entries.at(name), "${VAR}")
            found.append((name, Secret(value)))
        return tuple(found)


def resolve(base: Path, path: str) -> str:
    if os.path.isabs(path):
        return path
    # normpath drops a trailing "/", which still means "a directory" to a feed reader.
    resolved = os.path.normpath(base / path)
    return resolved + "/" if path.endswith("/") else resolved


def within(path: str, value: _N, interval: str, *, shown: object = None) -> _N:
    """``value`` if in ``interval`` ("[1, 8]", "(0, 1d]": bounds may be durations)."""
    closed_low, low, high, closed_high = registry.bounds(interval)
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        given = show(value if shown is None else shown)
        raise ConfigError(path, f"{given} is out of range; allowed: {interval}")
    return value


def only(key: str) -> str:
    types = registry.only_for(key)
    return f" ({key} is only for {' and '.join(types)} feeds)" if types else ""


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return kind(value)
