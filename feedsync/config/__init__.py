"""The configuration: one YAML file loaded into frozen, validated objects.

Every error names its key path (``feeds[2].schedule: ...``). ``${VAR}`` in a
string value is read from the environment (``${VAR:-default}``, ``$$`` for a
literal ``$``); ``password_file``/``api_key_file`` read a secret from a file
(``feedsync.config.secretfile``: a small regular file, no link).
Secrets are wrapped in ``Secret`` so no repr, log line or message shows them;
``Config.warnings`` names those that others can read.

This module holds the entry points (``load``, ``parse``) and re-exports the values
callers import (``settings``); ``_yaml`` reads the YAML, ``_sections`` and ``_feeds``
read each section through ``_reader`` against the declarations in ``keys``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from feedsync.config import schedule as _schedule
from feedsync.config._feeds import feeds as _feeds
from feedsync.config._reader import Context, Map, resolve
from feedsync.config._sections import (
    SUPPLIER_NAME,
    allowlist,
    cybertrace,
    exclude,
    provenance,
    server,
    supplier_defaults,
    suppliers,
)
from feedsync.config._yaml import expand, read_yaml
from feedsync.config.exclude import ExcludeConfig
from feedsync.config.keys import FEED_TYPES, SOURCE_TYPES, FeedType
from feedsync.config.rules import supplier_typos
from feedsync.config.safevalues import parse_canaries
from feedsync.config.settings import (
    BUILTIN_SUPPLIERS,
    DEFAULT_MAX_BODY,
    HOURLY,
    OPTIONS,
    PROXY_FORMS,
    Config,
    CsvConfig,
    CyberTraceConfig,
    FeedConfig,
    FeedRetryConfig,
    MispConfig,
    MispFeedConfig,
    ProvenanceConfig,
    ProxyConfig,
    ProxyMode,
    RetryConfig,
    Secret,
    ServerConfig,
    SourceOptions,
    StateConfig,
    SupplierConfig,
    SupplierDefaults,
    TaxiiConfig,
)
from feedsync.errors import ConfigError
from feedsync.safety.allowlist import Allowlist
from feedsync.safety.poison import DEFAULT_CANARIES

__all__ = [
    "BUILTIN_SUPPLIERS",
    "DEFAULT_MAX_BODY",
    "DEFAULT_PATH",
    "FEED_TYPES",
    "HOURLY",
    "OPTIONS",
    "PROXY_FORMS",
    "SOURCE_TYPES",
    "Config",
    "ConfigError",
    "CsvConfig",
    "CyberTraceConfig",
    "FeedConfig",
    "FeedRetryConfig",
    "FeedType",
    "MispConfig",
    "MispFeedConfig",
    "ProvenanceConfig",
    "ProxyConfig",
    "ProxyMode",
    "RetryConfig",
    "Schedule",
    "Secret",
    "ServerConfig",
    "SourceOptions",
    "StateConfig",
    "SupplierConfig",
    "SupplierDefaults",
    "TaxiiConfig",
    "accepted_keys",
    "default_path",
    "load",
    "parse",
    "parse_duration",
]

Schedule = _schedule.Schedule
parse_duration = _schedule.parse_duration

DEFAULT_PATH = "/etc/feedsync/feedsync.yaml"


def default_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("FEEDSYNC_CONFIG") or DEFAULT_PATH


def load(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, secrets: bool = True
) -> Config:
    """The configuration at ``path``. ``secrets=False`` leaves every secret whose
    variable is unset, and every secret file, unread (None): for commands that
    never connect (``status``), run by someone who is not given the secrets."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise ConfigError("", f"cannot read {os.fspath(path)}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {os.fspath(path)}: not UTF-8 text") from exc
    base = os.path.dirname(os.path.abspath(path))
    env = os.environ if env is None else env
    return _parse(text, os.fspath(path), env, base, mode, secrets=secrets)


def parse(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    return _parse(text, source, os.environ if env is None else env, base_dir or os.getcwd(), None)


def accepted_keys(
    text: str, env: Mapping[str, str], base_dir: str
) -> tuple[Config, Mapping[str, frozenset[str]]]:
    """``text`` loaded, with the keys the loader allowed in each of its mappings, by key
    path (``feeds[0].retry``): what docs, example and schema are held against."""
    data = expand(read_yaml(text, "<keys>"), "", env, set(), None)
    context = Context(Path(os.path.abspath(base_dir)), "<keys>", None, set())
    loaded = _config(data, "<keys>", context)
    return loaded, MappingProxyType(context.accepted)


def _parse(
    text: str,
    source: str,
    env: Mapping[str, str],
    base_dir: str,
    mode: int | None,
    *,
    secrets: bool = True,
) -> Config:
    unset: dict[str, str] | None = None if secrets else {}
    literal: set[str] = set()
    data = expand(read_yaml(text, source), "", env, literal, unset)
    context = Context(Path(os.path.abspath(base_dir)), source, mode, literal, unset=unset)
    try:
        return _config(data, source, context)
    except ConfigError as exc:
        # A key read empty because its variable is unset: say so, not "must not be empty".
        if unset and exc.path in unset:
            raise ConfigError(exc.path, unset[exc.path]) from None
        raise


def _config(data: dict[Any, Any], source: str, context: Context) -> Config:
    top = Map("", data, "", context)
    context.exclude = exclude(context, "exclude", data.get("exclude"), ExcludeConfig())
    context.allowlist = allowlist(context, "allowlist", data.get("allowlist"), Allowlist())
    context.canaries = parse_canaries("canaries", data.get("canaries"), DEFAULT_CANARIES)
    ct = cybertrace(top.child("cybertrace", "cybertrace"))
    state = top.child("state", "state", optional=True)
    server_config = server(top.child("server", "server", optional=True))
    feeds = _feeds(top)
    supplier_typos(top.data.get("suppliers"), feeds, BUILTIN_SUPPLIERS, SUPPLIER_NAME)
    defaults = supplier_defaults(top)
    return Config(
        path=source,
        cybertrace=ct,
        state=StateConfig(
            resolve(context.base, state.text("path")),
            journal_max_age=state.duration("journal_max_age"),
            journal_max_rows=state.integer("journal_max_rows"),
        ),
        server=server_config,
        suppliers=MappingProxyType(suppliers(top, {feed.supplier for feed in feeds}, defaults)),
        feeds=feeds,
        warnings=tuple(context.warnings),
        supplier_defaults=defaults,
        provenance=provenance(top.child("provenance", "provenance", optional=True)),
    )
