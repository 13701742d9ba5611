"""Every key the loader accepts is in the key registry (feedsync.config.keys), in
docs/configuration.md and in config/example.yaml, and the JSON Schema built from the
registry takes the example (issue 15 items 9 and 11).

The accepted keys come from the loader itself (``config.accepted_keys``: the key sets
each of its mappings was checked against), which reads every mapping against the
registry's declarations (issue 14 rule 4): a key declared without docs or an example
line fails here, and so does a reader whose default or range is not the declared one."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from feedsync import cli, config
from feedsync.config import keys as configkeys
from feedsync.config import schema as configschema
from feedsync.config._reader import Context, Map
from feedsync.config.keys import FEED_TYPES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example.yaml"
DOCS = ROOT / "docs" / "configuration.md"
ENV = {
    "CYBERTRACE_PASSWORD": "pw",
    "ABUSECH_AUTH_KEY": "key",
    "PROXY_PASSWORD": "ppw",
    "MISP_API_KEY": "mk",
}
# The example writes cybertrace.proxy in its default form; the loader checks the keys
# of a proxy mapping only where there is one.
PROXY_MAPPING = """\
cybertrace: {url: "https://ct.example", username: u, password: p,
             proxy: {url: "http://proxy.example:3128"}}
feeds: [{name: f, type: csv, url: /x, supplier: S}]
"""
Accepted = dict[str, dict[str | None, frozenset[str]]]


def section_of(path: str, feeds: tuple[config.FeedConfig, ...]) -> tuple[str, str | None]:
    """A key path as the registry names its section, with the feed's type."""
    feed = re.fullmatch(r"feeds\[(\d+)\](.*)", path)
    if feed:
        return f"feeds[]{feed.group(2)}", feeds[int(feed.group(1))].type
    if re.fullmatch(r"suppliers\.[^.]+", path):
        return "suppliers.*", None
    return path, None


@cache
def loader_keys() -> Accepted:
    found: Accepted = {}
    for text in (EXAMPLE.read_text(encoding="utf-8"), PROXY_MAPPING):
        loaded, accepted = config.accepted_keys(text, ENV, str(EXAMPLE.parent))
        for path, keys in accepted.items():
            section, kind = section_of(path, loaded.feeds)
            found.setdefault(section, {})[kind] = keys
    return found


def accepted_in(section: str) -> Iterator[tuple[str | None, str]]:
    for kind, keys in loader_keys()[section].items():
        for key in sorted(keys):
            yield kind, key


def types_of(section: str, key: str) -> set[str]:
    return {kind for kind, keys in loader_keys()[section].items() if kind and key in keys}


def test_the_loader_is_seen_with_a_feed_of_every_type_and_every_section() -> None:
    found = loader_keys()
    assert set(found["feeds[]"]) == set(FEED_TYPES)
    assert set(found) == set(configkeys.SECTIONS)


def test_the_registry_holds_exactly_the_keys_the_loader_accepts() -> None:
    for section, by_type in loader_keys().items():
        for kind, keys in by_type.items():
            assert configkeys.keys(section, kind) == keys, (section, kind)


# docs/configuration.md: a table per section under a heading naming it in backticks;
# a row per key, "| `key` | default | types (feeds) | meaning |".


def doc_tables() -> dict[str, dict[str, list[str]]]:
    tables: dict[str, dict[str, list[str]]] = {}
    rows: dict[str, list[str]] | None = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            named = re.fullmatch(r"#+ `([^`]+)`.*", line)
            section = named.group(1) if named else "" if line == "## Top level" else None
            rows = None if section is None else tables.setdefault(section, {})
            continue
        row = re.match(r"\| `([a-z_]+)` \|", line)
        if row and rows is not None:
            rows[row.group(1)] = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return tables


def test_docs_list_every_accepted_key_and_no_other() -> None:
    tables = doc_tables()
    for section in loader_keys():
        documented = tables.get(section)
        assert documented is not None, f"docs/configuration.md has no table for `{section}`"
        accepted = {key for _kind, key in accepted_in(section)}
        assert set(documented) == accepted, section


def test_docs_name_the_feed_types_each_feed_key_is_for() -> None:
    for key, cells in doc_tables()["feeds[]"].items():
        written = cells[2]
        expected = types_of("feeds[]", key)
        shown = set(FEED_TYPES) if written == "all" else set(re.split(r",\s*", written))
        assert shown == expected, f"{key}: docs say {written!r}"


# config/example.yaml, with its "#key: value" lines uncommented


def uncommented() -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    # ${VAR} is no plain scalar in a flow mapping; the loader hides its braces likewise.
    text = re.sub(r"\$\{[^{}]*\}", "VAR", text)
    return re.sub(r"(?m)^(\s*)#(?=[a-z_]+:)", r"\1", text)


def shown_keys() -> Accepted:
    """The keys the uncommented example writes in each section (duplicates included:
    alternatives of one key are each a line)."""
    shown: Accepted = {}

    def walk(node: yaml.Node, section: str, kind: str | None) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        names = {k.value for k, _v in node.value}
        shown.setdefault(section, {}).setdefault(kind, frozenset())
        shown[section][kind] |= names
        for key, value in node.value:
            if section == "" and key.value == "feeds":
                for item in value.value:
                    feed_type = next(v.value for k, v in item.value if k.value == "type")
                    walk(item, "feeds[]", feed_type)
            elif section == "" and key.value == "suppliers":
                for _name, entry in value.value:
                    walk(entry, "suppliers.*", None)
            elif key.value in ("retry", "proxy", "exclude", "allowlist") or section == "":
                walk(value, f"{section}.{key.value}" if section else key.value, kind)

    walk(yaml.compose(uncommented()), "", None)
    return shown


def test_the_example_shows_every_accepted_key() -> None:
    shown = shown_keys()
    for section in loader_keys():
        for kind, key in accepted_in(section):
            if section.startswith("feeds[]"):
                where = [k for k, keys in shown.get(section, {}).items() if key in keys]
                assert where, f"config/example.yaml has no feed with {section}.{key}"
                assert set(where) & types_of(section, key), f"{key}: only in {where} feeds"
            else:
                assert key in shown.get(section, {}).get(kind, ()), f"{section}: {key}"


def test_the_example_shows_no_key_the_loader_would_refuse() -> None:
    found = loader_keys()
    for section, by_type in shown_keys().items():
        for kind, keys in by_type.items():
            accepted = found[section].get(kind) or frozenset().union(*found[section].values())
            assert keys <= accepted, (section, kind, keys - accepted)


# The JSON Schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = configschema.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_takes_the_example(
    validator: jsonschema.Draft202012Validator,
) -> None:
    validator.validate(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["feeds"][0].update(bogus=1), "bogus"),
        (lambda d: d["feeds"][0].update(schedule=5), "schedule"),
        (lambda d: d["cybertrace"].update(api_version=1.1), "api_version"),
        (lambda d: d["feeds"][1].update(collection="c"), "collection"),  # a csv feed
        (lambda d: d["cybertrace"].pop("url"), "url"),
        (lambda d: d["cybertrace"].update(password_file="/p"), "password"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(
    validator: jsonschema.Draft202012Validator, change: object, fragment: str
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    change(data)  # type: ignore[operator]
    errors = list(validator.iter_errors(data))
    assert errors
    assert any(fragment in json.dumps(list(e.absolute_path)) + e.message for e in errors)


def test_check_schema_prints_the_schema_without_a_config(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["check", "--schema", "-c", str(tmp_path / "absent.yaml")])
    assert code == 0
    assert json.loads(out.getvalue()) == configschema.json_schema()
    assert json.loads(out.getvalue())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# User-facing text works from a clone alone


def test_user_facing_text_names_nothing_outside_the_repository() -> None:
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for pattern in ("docs/*.md", "config/*.yaml"):
        for path in ROOT.glob(pattern):
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for command in ([], ["check"], ["sync"], ["status"], ["run"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        texts[f"feedsync {' '.join(command)} --help"] = out.getvalue()
    for name, text in texts.items():
        assert "../shared" not in text and "DESIGN.md" not in text, name
    assert "docs/configuration.md" in texts["README.md"]


# Defaults: the registry's are the loader's, and the docs show them


def minimal(feed: str) -> str:
    return (
        "cybertrace: {url: 'https://ct.example', username: u, password: p}\n"
        f"feeds:\n  - {{name: f, url: 'https://feed.example/', supplier: S, {feed}}}\n"
    )


FEED_OF_TYPE = {
    "csv": "type: csv",
    "misp": "type: misp, api_key: k",
    "misp_feed": "type: misp_feed",
    "taxii": "type: taxii, collection: c",
}


def loaded_holder(section: str, key: str, kind: str | None) -> object:
    """The loaded object that holds ``key`` (a feed type's own keys: its options)."""
    loaded = config.parse(minimal(FEED_OF_TYPE[kind or "taxii"]), env={})
    holder: object = loaded
    for part in section.replace("feeds[]", "feeds").split("."):
        holder = loaded.feeds[0] if part == "feeds" else getattr(holder, part)
    if isinstance(holder, config.FeedConfig) and not hasattr(holder, key):
        return holder.options
    return holder


def loaded_value(section: str, key: str, kind: str | None) -> object:
    return getattr(loaded_holder(section, key, kind), key)


def as_loaded(default: object) -> object:
    if isinstance(default, str) and re.fullmatch(r"\d+[smhd]", default):
        return config.parse_duration(default)
    return default


def test_registry_defaults_are_the_loader_s() -> None:
    checked = 0
    for section, section_keys in configkeys.SECTIONS.items():
        for key in section_keys:
            if key.default in (None, configkeys.REQUIRED) or section in ("", "suppliers.*"):
                continue
            if section == "server" and key.name == "listen":
                continue  # loaded as host and port
            if section.endswith(("exclude", "allowlist")) or key.name == "canaries":
                continue  # loaded as the values in force (ExcludeConfig, Allowlist)
            if key.name in ("proxy",):
                assert loaded_value(section, key.name, key.types[-1]).mode == key.default
                continue
            if key.name == "indicator":
                continue  # "the first column": the loader leaves it unset
            kind = key.types[-1] if section.startswith("feeds[]") else None
            value = loaded_value(section, key.name, kind)
            if isinstance(value, config.Schedule):
                value = value.text
            expected = key.default if isinstance(value, str) else as_loaded(key.default)
            assert value == expected, (section, key.name, value)
            # The settings' dataclasses repeat the defaults for objects built by hand.
            holder = loaded_holder(section, key.name, kind)
            built = type(holder).__dataclass_fields__[key.name].default  # type: ignore[attr-defined]
            if isinstance(built, config.Schedule):
                built = built.text
            assert built == value, (section, key.name, built)
            checked += 1
    assert checked > 30


def test_docs_show_each_registry_default() -> None:
    tables = doc_tables()
    for section, section_keys in configkeys.SECTIONS.items():
        for key in section_keys:
            if key.default is None:
                continue
            cell = tables[section][key.name][1]
            shown = str(key.default).lower() if isinstance(key.default, bool) else str(key.default)
            assert shown in cell, f"{section}.{key.name}: docs say {cell}, registry {shown}"


def test_the_docs_examples_load() -> None:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(- name:.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    env = {"ABUSECH_AUTH_KEY": "k", "MISP_API_KEY": "k", "TAXII_TOKEN": "t"}
    for block in blocks:
        feeds = "\n".join(f"  {line}" for line in block.splitlines())
        head = "cybertrace: {url: 'https://ct.example', username: u, password: p}\n"
        loaded = config.parse(f"{head}feeds:\n{feeds}\n", env=env)
        assert len(loaded.feeds) == 1, block


# Ranges: declared once, and both the loader and the schema refuse past them


def ranged_keys() -> list[tuple[str, configkeys.Key]]:
    return [
        (section, key)
        for section, section_keys in configkeys.SECTIONS.items()
        for key in section_keys
        if key.range is not None
    ]


def with_value(section: str, key: configkeys.Key, value: object) -> tuple[dict[str, object], str]:
    """A minimal configuration with ``key`` of ``section`` set to ``value``, and its path."""
    kind = key.types[-1]
    feed: dict[str, object] = {"name": "f", "url": "https://feed.example/", "supplier": "S"}
    feed |= yaml.safe_load("{" + FEED_OF_TYPE[kind] + "}")
    data: dict[str, object] = {
        "cybertrace": {"url": "https://ct.example", "username": "u", "password": "p"},
        "feeds": [feed],
    }
    parts = section.replace("feeds[]", "feeds").replace("suppliers.*", "suppliers.S").split(".")
    holder: dict[str, object] = data
    for part in parts if section else ():
        holder = feed if part == "feeds" else holder.setdefault(part, {})  # type: ignore[assignment]
    holder[key.name] = value
    path = section.replace("feeds[]", "feeds[0]").replace("suppliers.*", "suppliers.S")
    return data, f"{path}.{key.name}" if path else key.name


def past_the_top(key: configkeys.Key) -> object:
    assert key.range is not None
    _closed_low, _low, high, _closed_high = configkeys.bounds(key.range)
    if key.schema.get("type") == "integer":
        return int(high) + 1
    if key.schema.get("type") == "number":
        return high + 1
    return f"{int(high) + 1}s"  # a duration, in its unit


@pytest.mark.parametrize(
    ("section", "key"), ranged_keys(), ids=[f"{s}.{k.name}" for s, k in ranged_keys()]
)
def test_the_loader_and_the_schema_refuse_past_a_declared_range(
    validator: jsonschema.Draft202012Validator, section: str, key: configkeys.Key
) -> None:
    value = past_the_top(key)
    data, path = with_value(section, key, value)
    with pytest.raises(config.ConfigError) as info:
        config.parse(yaml.safe_dump(data), env={})
    assert info.value.path == path
    assert "out of range; allowed: " in info.value.message
    if not isinstance(value, str):  # a duration's text has no bounds in JSON Schema
        assert not validator.is_valid(data), path
    _closed_low, _low, top, closed_top = configkeys.bounds(key.range or "")
    if not isinstance(value, str) and closed_top:
        data, _path = with_value(section, key, int(top) if isinstance(value, int) else top)
        if key.name == "initial_delay":  # max_delay is at least initial_delay
            data["cybertrace"]["retry"]["max_delay"] = top  # type: ignore[index]
        assert config.parse(yaml.safe_dump(data), env={})
        assert validator.is_valid(data), path


def test_a_reader_asking_for_an_undeclared_or_other_kind_of_key_fails_loudly() -> None:
    # The reader takes defaults and ranges from the declarations: a key it reads
    # without one is a mistake in feedsync, not in the file.
    context = Context(Path("/"), "<test>", None, set())
    section = Map("cybertrace", {}, "cybertrace", context)
    assert section.integer("concurrency") == 2
    with pytest.raises(KeyError, match=r"cybertrace\.bogus"):
        section.integer("bogus")
    with pytest.raises(AssertionError, match="integer"):
        section.integer("timeout")  # declared a number: reader and declaration disagree


def every_key() -> list[tuple[str, configkeys.Key]]:
    return [(s, k) for s, section_keys in configkeys.SECTIONS.items() for k in section_keys]


@pytest.mark.parametrize(
    ("section", "key"), every_key(), ids=[f"{s}.{k.name}" for s, k in every_key()]
)
def test_the_loader_reads_every_declared_key(section: str, key: configkeys.Key) -> None:
    # A key declared (so accepted) but never read would be taken and silently ignored:
    # a value no key takes must be refused at that key's path.
    data, path = with_value(section, key, [{"x": 1}])
    with pytest.raises(config.ConfigError) as info:
        config.parse(yaml.safe_dump(data), env={})
    assert info.value.path.startswith(path), (path, info.value)
