"""The ``exclude:`` settings, at the top of the configuration and in each feed.

``builtin`` is true (every built-in exclusion, the default), false (none) or the
list of the built-ins to apply; ``builtin_off`` names built-ins turned off after
that; ``warninglists`` picks MISP warninglists by name, by ``type:<type>`` or
``all``. A key a feed gives replaces the top-level key; the others are inherited.
"""

from __future__ import annotations

from dataclasses import dataclass

from feedsync.config.keys import keys
from feedsync.errors import ConfigError
from feedsync.safety.exclusions import BUILTIN
from feedsync.safety.warninglists import check_selector

KEYS = tuple(sorted(keys("exclude")))  # declared in keys.py


@dataclass(frozen=True, slots=True)
class ExcludeConfig:
    """What a feed excludes: the built-ins on, and the warninglist selectors."""

    builtin: tuple[str, ...] = BUILTIN
    warninglists: tuple[str, ...] = ()
    # Kept as given, so that a feed's own keys replace them one by one.
    builtin_given: tuple[str, ...] | None = None
    builtin_off: tuple[str, ...] = ()


def parse_exclude(path: str, raw: object, inherited: ExcludeConfig) -> ExcludeConfig:
    """``raw`` (the ``exclude:`` mapping at ``path``, or None) over ``inherited``."""
    if raw is None:
        return inherited
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of {', '.join(KEYS)}")
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"{path}.{key}", f"unknown key; known keys: {', '.join(KEYS)}")
    given = inherited.builtin_given
    if "builtin" in raw:
        given = _builtin(f"{path}.builtin", raw["builtin"])
    off = inherited.builtin_off
    if "builtin_off" in raw:
        off = _names(f"{path}.builtin_off", raw["builtin_off"])
    selectors = inherited.warninglists
    if "warninglists" in raw:
        selectors = _selectors(f"{path}.warninglists", raw["warninglists"])
    on = BUILTIN if given is None else given
    return ExcludeConfig(tuple(n for n in on if n not in off), selectors, given, off)


def _builtin(path: str, value: object) -> tuple[str, ...]:
    if value is True:
        return BUILTIN
    if value is False:
        return ()
    return _names(path, value)


def _names(path: str, value: object) -> tuple[str, ...]:
    items = _strings(path, value)
    for index, name in enumerate(items):
        if name not in BUILTIN:
            raise ConfigError(
                f"{path}[{index}]", f"{name!r} is not one of {', '.join(BUILTIN)}"
            )
    return items


def _selectors(path: str, value: object) -> tuple[str, ...]:
    items = _strings(path, value)
    for index, selector in enumerate(items):
        problem = check_selector(selector)
        if problem is not None:
            raise ConfigError(f"{path}[{index}]", problem)
    return items


def _strings(path: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(path, "expected a list of names")
    return tuple(value)
