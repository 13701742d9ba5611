"""MISP warninglists as exclusions, and the screen a feed's exclusion settings make.

The lists are those ``pymispwarninglists`` ships in its wheel.

The package's own loader keeps every list as Python objects (about 290 MB for
the full set); feedsync reads the lists' JSON itself, only the lists a
configuration picks, into the tables of exclusions.py. Matching follows each
list's ``type``: ``cidr`` by containment (addresses, and the address host of a
URL), ``hostname`` by suffix (a domain, and the host of a URL), ``string`` by
exact canonical value (hashes, domains, URLs, addresses), ``substring`` and
``regex`` over the canonical value (substrings ignoring case, regexes with
their own ``/.../i`` flags).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

import orjson

from feedsync.model import Kind
from feedsync.normalize import InvalidValue, canonicalize
from feedsync.safety.exclusions import BUILTIN_VERSION, Entries, Screen, compose, network_span
from feedsync.safety.tables import release_freed

TYPES = ("cidr", "hostname", "string", "substring", "regex")
PREFIX = "warninglist:"  # a reason names its list: warninglist:<directory name>
_IPS = (Kind.IPV4, Kind.IPV6)


def root() -> Path:
    # Found, not imported: the package's own import loads jsonschema, which costs
    # every `feedsync sync` start-up time although only the data files are read.
    spec = importlib.util.find_spec("pymispwarninglists")
    if spec is None or spec.origin is None:
        raise ImportError("pymispwarninglists, a dependency of feedsync, is not installed")
    return Path(spec.origin).parent / "data" / "misp-warninglists" / "lists"


@functools.cache
def available() -> tuple[str, ...]:
    """The directory names of the lists in the package, sorted."""
    return tuple(sorted(p.parent.name for p in root().glob("*/list.json")))


def check_selector(selector: str) -> str | None:
    """Why ``selector`` picks no list, or None: ``all``, ``type:<type>`` or a name."""
    if selector == "all" or selector in available():
        return None
    if selector.startswith("type:"):
        if selector[5:] in TYPES:
            return None
        return f"{selector!r}: the types are {', '.join(TYPES)}"
    return f"{selector!r} is no warninglist of pymispwarninglists"


def _raw(name: str) -> dict[str, object]:
    data = orjson.loads((root() / name / "list.json").read_bytes())
    assert isinstance(data, dict)
    return data


@functools.cache
def _type(name: str) -> str:
    return str(_raw(name).get("type", ""))


def chosen(selectors: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the lists ``selectors`` pick, in the order picked."""
    names: dict[str, None] = {}
    for selector in selectors:
        if selector == "all":
            names.update(dict.fromkeys(available()))
        elif selector.startswith("type:"):
            names.update((n, None) for n in available() if _type(n) == selector[5:])
        else:
            names[selector] = None
    return tuple(names)


# MISP attribute types as feedsync's kinds, for substring and regex lists. The
# composite "domain|ip" is neither: disposable-email names it beside e-mail types,
# and would exclude addresses and names by a fragment.
_ATTRIBUTES = {
    **dict.fromkeys(("ip-src", "ip-dst", "ip-src|port", "ip-dst|port"), _IPS),
    **dict.fromkeys(("domain", "hostname", "hostname|port"), (Kind.DOMAIN,)),
    **dict.fromkeys(("url", "uri", "link"), (Kind.URL,)),
    **dict.fromkeys(("md5", "filename|md5", "x509-fingerprint-md5"), (Kind.MD5,)),
    **dict.fromkeys(("sha1", "filename|sha1", "x509-fingerprint-sha1"), (Kind.SHA1,)),
    **dict.fromkeys(("sha256", "filename|sha256", "x509-fingerprint-sha256"), (Kind.SHA256,)),
}


def _kinds(data: dict[str, object]) -> frozenset[Kind]:
    """The kinds a list's substrings and regexes apply to: its matching_attributes'
    (all kinds for a list that names none)."""
    attributes = data.get("matching_attributes")
    if not isinstance(attributes, list) or not attributes:
        return frozenset(Kind)
    return frozenset(kind for a in attributes for kind in _ATTRIBUTES.get(str(a), ()))


def entries(name: str) -> Entries:
    """List ``name`` read into what exclusions.compose builds tables from (not
    kept: the tables are what stays)."""
    data = _raw(name)
    values = [str(v).strip() for v in data.get("list") or () if str(v).strip()]  # type: ignore[attr-defined]
    kind, reason = _type(name), PREFIX + name
    if kind == "cidr":
        networks = []
        for value in values:
            try:
                networks.append(network_span(value, reason))
            except ValueError:
                continue  # a list's typo excludes nothing rather than failing the feed
        return Entries(reason, networks=tuple(networks))
    if kind == "hostname":
        hosts = (v.lower().lstrip("*").strip(".") for v in values)
        return Entries(reason, domains=tuple(h for h in hosts if h))
    if kind == "string":
        return _strings(reason, values)
    if kind == "substring":
        return Entries(reason, substrings=tuple(values), kinds=_kinds(data))
    if kind == "regex":
        return Entries(reason, patterns=tuple(_compiled(values)), kinds=_kinds(data))
    return Entries(reason)


def _strings(reason: str, values: list[str]) -> Entries:
    """A ``string`` list: exact canonical values; its addresses as one-address spans
    (the screen finds addresses in its interval tables only)."""
    exact: list[str] = []
    networks = []
    for value in values:
        try:
            kind, canonical = canonicalize(value)
        except InvalidValue:
            exact.append(value.lower())
            continue
        if kind in _IPS:
            networks.append(network_span(canonical, reason))
        else:
            exact.append(canonical)
    return Entries(reason, networks=tuple(networks), exact=tuple(exact))


def _compiled(values: list[str]) -> list[re.Pattern[str]]:
    out = []
    for value in values:
        # Written as PHP has them, "/pattern/flags": i ignores case, g means nothing here.
        pattern, flags = value, "i"
        if value.startswith("/") and value.rfind("/") > 0:
            end = value.rfind("/")
            pattern, flags = value[1:end], value[end + 1 :]
        try:
            out.append(re.compile(pattern, re.IGNORECASE if "i" in flags else 0))
        except re.error:
            continue  # a construct Python's re lacks (PCRE): skipped, not fatal
    return out


@functools.lru_cache(maxsize=64)
def screen_for(builtin: tuple[str, ...], selectors: tuple[str, ...], expand_cidr: int) -> Screen:
    """The screen of these settings, built once per process (a reload that keeps
    them keeps it)."""
    lists = (entries(name) for name in chosen(selectors))  # one list's strings at a time
    screen = compose(builtin, lists, expand_cidr, fingerprint(builtin, selectors, expand_cidr))
    if selectors:
        release_freed()
    return screen


def fingerprint(builtin: tuple[str, ...], selectors: tuple[str, ...], expand_cidr: int) -> str:
    """What identifies a feed's exclusion settings and the lists they read, without
    reading them: a feed whose fingerprint changed is read again although its body
    did not (cycle_fetch), so that what it now excludes leaves its supplier."""
    package = _package() if selectors else ""
    settings = (BUILTIN_VERSION, builtin, selectors, expand_cidr, package)
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


@functools.cache
def _package() -> str:
    # Imported here: importlib.metadata costs a sync without warninglists some 6 ms.
    import importlib.metadata  # noqa: PLC0415

    return importlib.metadata.version("pymispwarninglists")
