"""Configuration: every rule of DESIGN.md's "Configuration", every error's key path."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest
from conftest import TEST_CA_PEM

from feedsync.config import (
    BUILTIN_SUPPLIERS,
    SOURCE_TYPES,
    Config,
    CsvConfig,
    CyberTraceConfig,
    FeedConfig,
    MispConfig,
    RetryConfig,
    Schedule,
    Secret,
    ServerConfig,
    StateConfig,
    SupplierConfig,
    SupplierDefaults,
    TaxiiConfig,
    default_path,
    load,
    parse,
    parse_duration,
)
from feedsync.errors import ConfigError

PASSWORD = "hunter2-Secret"
ENV = {"CT_PASSWORD": PASSWORD}
URLHAUS = "https://urlhaus.abuse.ch/downloads/csv_recent/"


def make(
    cybertrace: str = "",
    feed: str = "",
    *,
    feed_type: str = "csv",
    suppliers: str = "URLhaus: {confidence: 80}\n",
    more: str = "",
) -> str:
    """A small valid config, plus lines for cybertrace, the first feed, or after the feeds."""
    return (
        "cybertrace:\n"
        "  url: https://ct.example:443/\n"
        "  username: feedsync\n"
        "  password: ${CT_PASSWORD}\n"
        + textwrap.indent(cybertrace, "  ")
        + ("suppliers:\n" + textwrap.indent(suppliers, "  ") if suppliers else "")
        + "feeds:\n"
        "  - name: urlhaus\n"
        f"    type: {feed_type}\n"
        f"    url: {URLHAUS}\n"
        "    supplier: URLhaus\n" + textwrap.indent(feed, "    ") + more
    )


def error(text: str, env: dict[str, str] | None = None, base_dir: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env=ENV if env is None else env, base_dir=base_dir)
    return str(info.value)


def expect(text: str, path: str, fragment: str = "", base_dir: str | None = None) -> str:
    """The error of ``text``: it starts with the key path and says ``fragment``."""
    message = error(text, base_dir=base_dir)
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message
    return message


# The design document's example, verbatim but for its blank lines.
DESIGN_EXAMPLE = """\
cybertrace:
  url: https://cybertrace.example:443   # http:// allowed (tests, local emulator)
  api_version: "1.2"                     # "1.0" | "1.1" | "1.2" | "1.3"
  tenant: null                           # with 1.3 multitenancy
  username: feedsync
  password: ${CYBERTRACE_PASSWORD}       # ${VAR} is read from the environment
  # password_file: /etc/feedsync/cybertrace.password
  verify_tls: true                       # true | false | path to a CA bundle
  timeout: 300                           # seconds per request
  concurrency: 2
  max_batch_bytes: 16777216
  max_batch_indicators: 20000
state:
  path: /var/lib/feedsync/state.db       # SQLite
server:
  listen: 127.0.0.1:9464                 # /metrics, /healthz, /readyz
suppliers:                               # used when feedsync creates a supplier
  URLhaus: {confidence: 80, retention: 0, vendor: abuse.ch}
feeds:
  - name: urlhaus                        # unique, [A-Za-z0-9_.-]+
    type: csv                            # csv | misp | misp_feed | taxii
    url: https://urlhaus.abuse.ch/downloads/csv_recent/   # http(s)://, file:// or a path
    supplier: URLhaus
    schedule: 15m                        # 30s, 15m, 1h, 1d, or a 5-field cron line
    indicator: url                       # csv: column name (from the header) or 1-based index
    context: {threat: threat, status: url_status}   # CyberTrace field: source field
    tags: [abusech]                      # static tags, added to every indicator
    tags_field: tags                     # source field holding more tags
    max_delete_ratio: 0.5
  - name: circl
    type: misp_feed                      # directory with manifest.json + <uuid>.json
    url: https://www.circl.lu/doc/misp/feed-osint/
    supplier: CIRCL
  - name: misp-prod
    type: misp                           # MISP REST API, /attributes/restSearch
    url: https://misp.example
    api_key: ${MISP_API_KEY}
    filters: {to_ids: true, published: true}
    supplier: MISP
  - name: partner-taxii
    type: taxii                          # TAXII 2.1 (2.0 where the server needs it)
    url: https://taxii.example/api1/     # an API root (or the discovery URL)
    collection: indicators               # collection id or title
    username: reader
    password: ${TAXII_PASSWORD}
    supplier: Partner
"""
DESIGN_ENV = {"CYBERTRACE_PASSWORD": "ct-pw", "MISP_API_KEY": "misp-key", "TAXII_PASSWORD": "tx-pw"}


def test_design_example_loads_into_the_expected_objects() -> None:
    loaded = parse(DESIGN_EXAMPLE, env=DESIGN_ENV)
    assert loaded == Config(
        path="<string>",
        cybertrace=CyberTraceConfig(
            url="https://cybertrace.example:443", username="feedsync", password=Secret("ct-pw")
        ),
        state=StateConfig("/var/lib/feedsync/state.db"),
        server=ServerConfig("127.0.0.1", 9464),
        suppliers=MappingProxyType({"URLhaus": SupplierConfig("URLhaus", 80, 0, "abuse.ch")}),
        warnings=(
            "suppliers.URLhaus.retention: 0 is sent as written, but CyberTrace's documentation"
            " does not say what a retention of 0 means (never expire, or refused); give minutes"
            " to be sure",
        ),
        feeds=(
            FeedConfig(
                name="urlhaus",
                type="csv",
                url=URLHAUS,
                supplier="URLhaus",
                schedule=Schedule("15m", 900.0, None),
                options=CsvConfig(
                    indicator="url",
                    context=(("threat", "threat"), ("status", "url_status")),
                    tags_field="tags",
                ),
                tags=("abusech",),
            ),
            FeedConfig("circl", "misp_feed", "https://www.circl.lu/doc/misp/feed-osint/", "CIRCL"),
            FeedConfig(
                "misp-prod",
                "misp",
                "https://misp.example",
                "MISP",
                options=MispConfig(
                    api_key=Secret("misp-key"),
                    filters=MappingProxyType({"to_ids": True, "published": True}),
                ),
            ),
            FeedConfig(
                "partner-taxii",
                "taxii",
                "https://taxii.example/api1/",
                "Partner",
                options=TaxiiConfig(collection="indicators"),
                username="reader",
                password=Secret("tx-pw"),
            ),
        ),
    )
    assert loaded.cybertrace.password.reveal() == "ct-pw"


EVERY_KEY = """\
cybertrace:
  url: http://127.0.0.1:9443/
  api_version: "1.3"
  tenant: acme
  username: feedsync
  password_file: ct.password
  verify_tls: ca.pem
  client_cert: client.pem
  client_key: client.key
  timeout: 30
  concurrency: 8
  max_batch_bytes: 1024
  max_batch_indicators: 1
  tag_weight: 5
  refresh_fraction: 0.25
  retry: {attempts: 1, initial_delay: 0.5, max_delay: 0.5}
state: {path: state/feedsync.db}
server: {listen: "[::1]:0", shutdown_grace: 0}
suppliers:
  Spamhaus: {confidence: 100, retention: 1440}
  MISP: {confidence: 0, vendor: CIRCL}
feeds:
  - name: spamhaus.drop
    type: csv
    url: lists/drop.txt
    supplier: Spamhaus
    schedule: "0 */6 * * *"
    indicator: 1
    context: {asn: ASN, cidr: "1"}
    tags: [spamhaus, "${TAG:-drop}"]
    tags_field: labels
    max_delete_ratio: 1
    comment: ";"
    delimiter: "\\t"
    header: false
    username: u
    password: ${FEED_PASSWORD}
    headers: {Auth-Key: "${AUTH_KEY}", X-Trace: on-$$HOST}
    verify_tls: false
    timeout: 5.5
    enabled: false
    unmark_detections: false
    max_body_bytes: 1048576
  - name: misp
    type: misp
    url: https://misp.example/
    supplier: MISP
    api_key_file: misp.key
    filters: {tags: ["tlp:white"], last: "${SINCE:-1d}"}
    schedule: 90s
  - name: fp
    type: taxii
    url: file:///srv/taxii
    supplier: FalsePositive
    collection: fp
    api_key: ${TAXII_KEY}
    unmark_detections: true
  - name: circl
    type: misp_feed
    url: /srv/circl/
    supplier: MISP
    schedule: 1h30m
"""


def test_every_key_loads_into_the_expected_objects(tmp_path: Path) -> None:
    for name, text in [("ca.pem", TEST_CA_PEM), ("client.pem", "C"), ("client.key", "K")]:
        (tmp_path / name).write_text(text)
    (tmp_path / "ct.password").write_text("  from-file\n")
    (tmp_path / "misp.key").write_text("misp-from-file\n")
    path = tmp_path / "feedsync.yaml"
    path.write_text(EVERY_KEY)
    env = {"FEED_PASSWORD": "feed-pw", "AUTH_KEY": "abuse-key", "TAXII_KEY": "tx-key", "TAG": ""}
    loaded = load(path, env=env)
    assert loaded.path == str(path)
    assert loaded.cybertrace == CyberTraceConfig(
        url="http://127.0.0.1:9443",
        username="feedsync",
        password=Secret("from-file"),
        api_version="1.3",
        tenant="acme",
        verify_tls=str(tmp_path / "ca.pem"),
        client_cert=str(tmp_path / "client.pem"),
        client_key=str(tmp_path / "client.key"),
        timeout=30.0,
        concurrency=8,
        max_batch_bytes=1024,
        max_batch_indicators=1,
        tag_weight=5,
        refresh_fraction=0.25,
        retry=RetryConfig(1, 0.5, 0.5),
    )
    assert loaded.state == StateConfig(str(tmp_path / "state" / "feedsync.db"))
    assert loaded.server == ServerConfig("::1", 0, 0.0)
    assert list(loaded.suppliers.items()) == [
        ("Spamhaus", SupplierConfig("Spamhaus", 100, 1440, None)),
        ("MISP", SupplierConfig("MISP", 0, 10080, "CIRCL")),  # supplier_defaults.retention
    ]
    spamhaus, misp, fp, circl = loaded.feeds
    assert spamhaus == FeedConfig(
        name="spamhaus.drop",
        type="csv",
        url=str(tmp_path / "lists" / "drop.txt"),
        supplier="Spamhaus",
        schedule=Schedule("0 */6 * * *", None, "0 */6 * * *"),
        options=CsvConfig(
            indicator=1,
            context=(("asn", "ASN"), ("cidr", "1")),
            tags_field="labels",
            comment=";",
            delimiter="\t",
            header=False,
        ),
        tags=("spamhaus", "drop"),
        max_delete_ratio=1.0,
        username="u",
        password=Secret("feed-pw"),
        headers=(("Auth-Key", Secret("abuse-key")), ("X-Trace", Secret("on-$HOST"))),
        verify_tls=False,
        timeout=5.5,
        enabled=False,
        max_body_bytes=1048576,
    )
    assert misp == FeedConfig(
        "misp",
        "misp",
        "https://misp.example/",
        "MISP",
        schedule=Schedule("90s", 90.0, None),
        options=MispConfig(
            api_key=Secret("misp-from-file"),
            filters=MappingProxyType({"tags": ["tlp:white"], "last": "1d"}),
        ),
    )
    assert fp == FeedConfig(
        "fp",
        "taxii",
        "file:///srv/taxii",
        "FalsePositive",
        options=TaxiiConfig(collection="fp", api_key=Secret("tx-key")),
        unmark_detections=True,
    )
    assert circl == FeedConfig(
        "circl", "misp_feed", "/srv/circl/", "MISP", Schedule("1h30m", 5400.0, None)
    )
    assert loaded.feeds_of("MISP") == (misp, circl)
    assert loaded.feeds_of("Spamhaus") == ()  # its only feed is disabled


def test_repository_example_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
    env = {"CYBERTRACE_PASSWORD": "pw", "ABUSECH_AUTH_KEY": "key", "PROXY_PASSWORD": "ppw"}
    loaded = load(example, env=env | {"MISP_API_KEY": "mk"})
    assert [f.name for f in loaded.feeds][:3] == ["urlhaus", "feodo", "threatfox"]
    assert {f.type for f in loaded.feeds} == {"csv", "misp", "misp_feed", "taxii"}
    assert loaded.feed("feodo").schedule.cron == "7 * * * *"
    assert loaded.feed("feodo").proxy.mode == "none"
    assert loaded.feed("urlhaus").proxy.url == "http://proxy.example:3128"


def test_defaults() -> None:
    loaded = parse(make(), env=ENV)
    assert loaded.path == "<string>"
    assert loaded.cybertrace == CyberTraceConfig(
        "https://ct.example:443", "feedsync", Secret(PASSWORD)
    )
    ct = loaded.cybertrace
    assert (ct.api_version, ct.tenant, ct.verify_tls, ct.timeout, ct.concurrency) == (
        "1.2",
        None,
        True,
        300.0,
        2,
    )
    assert (ct.max_batch_bytes, ct.max_batch_indicators, ct.tag_weight) == (16777216, 20000, 0)
    assert ct.retry == RetryConfig(5, 1.0, 60.0)
    assert loaded.state == StateConfig("/var/lib/feedsync/state.db")
    assert loaded.server == ServerConfig("127.0.0.1", 9464)
    assert loaded.feeds == (FeedConfig("urlhaus", "csv", URLHAUS, "URLhaus"),)
    feed = loaded.feeds[0]
    csv = feed.options_as(CsvConfig)
    assert (feed.schedule, feed.max_delete_ratio, csv.comment, csv.delimiter) == (
        Schedule("1h", 3600.0, None),
        0.5,
        "#",
        ",",
    )
    assert (csv.header, feed.verify_tls, feed.timeout, feed.enabled) == (None, True, 300.0, True)
    assert (feed.unmark_detections, feed.max_body_bytes) == (False, 4 << 30)
    misp = parse(make(feed="api_key: k\n", feed_type="misp"), env=ENV).feeds[0]
    assert dict(misp.options_as(MispConfig).filters) == {}


def test_null_values_take_the_default() -> None:
    loaded = parse(make("tenant: null\ntimeout: null\n", "schedule: null\ntags: null\n"), env=ENV)
    assert (loaded.cybertrace.tenant, loaded.cybertrace.timeout) == (None, 300.0)
    assert (loaded.feeds[0].schedule.seconds, loaded.feeds[0].tags) == (3600.0, ())


def test_objects_are_frozen_slotted_and_read_only() -> None:
    loaded = parse(make(feed_type="misp", feed="api_key: k\nfilters: {a: 1}\n"), env=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.cybertrace.timeout = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.suppliers["x"] = SupplierConfig("x", 1)  # type: ignore[index]
    with pytest.raises(TypeError):
        loaded.feeds[0].options_as(MispConfig).filters["a"] = 2  # type: ignore[index]
    assert not hasattr(loaded.feeds[0], "__dict__")
    assert not hasattr(loaded.feeds[0].options, "__dict__")


def test_feed_lookup_and_feeds_of() -> None:
    text = make(
        more="  - {name: b, type: csv, url: /b, supplier: URLhaus, enabled: false}\n"
        "  - {name: c, type: csv, url: /c, supplier: URLhaus}\n"
        "  - {name: fp, type: csv, url: /fp, supplier: FalsePositive}\n"
    )
    loaded = parse(text, env=ENV)
    assert loaded.feed("c").url == "/c"
    with pytest.raises(KeyError):
        loaded.feed("nope")
    assert [f.name for f in loaded.feeds] == ["urlhaus", "b", "c", "fp"]
    assert [f.name for f in loaded.feeds_of("URLhaus")] == ["urlhaus", "c"]
    assert [f.name for f in loaded.feeds_of("FalsePositive")] == ["fp"]
    assert loaded.feeds_of("Nobody") == ()


def test_builtin_suppliers_need_no_entry() -> None:
    assert frozenset({"FalsePositive", "InternalTI"}) == BUILTIN_SUPPLIERS
    text = make(suppliers="").replace("supplier: URLhaus", "supplier: InternalTI")
    assert parse(text, env=ENV).feeds[0].supplier == "InternalTI"


def test_default_path() -> None:
    assert default_path({"FEEDSYNC_CONFIG": "/x/f.yaml"}) == "/x/f.yaml"
    assert default_path({}) == "/etc/feedsync/feedsync.yaml"
    assert default_path({"FEEDSYNC_CONFIG": ""}) == "/etc/feedsync/feedsync.yaml"


# Secrets


def test_secret_never_shows() -> None:
    secret = Secret("s3cr3t")
    assert (repr(secret), str(secret), f"{secret}") == ("Secret('***')", "***", "***")
    assert secret.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(FeedConfig("a", "csv", "/a", "S", password=secret))


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("KEY-FROM-FILE\n")
    text = make(
        feed_type="taxii",
        feed="collection: c\nusername: u\npassword: FEED-PW\napi_key_file: key\n"
        "headers: {Auth-Key: HEADER-KEY}\n",
    )
    shown = repr(parse(text, env=ENV, base_dir=str(tmp_path)))
    for secret in (PASSWORD, "FEED-PW", "KEY-FROM-FILE", "HEADER-KEY"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (make("bogus: 1\n"), "cybertrace.bogus"),
        (make().replace("${CT_PASSWORD}", "[hunter2-Secret]"), "cybertrace.password"),
        (make().replace("${CT_PASSWORD}", "20240101"), "cybertrace.password"),
        (make(feed="username: u\npassword: {x: hunter2-Secret}\n"), "feeds[0].password"),
        (make(feed='headers: {Auth-Key: "hunter2-Secret\\nX: y"}\n'), "feeds[0].headers.Auth-Key"),
        (make(feed="headers: {Auth-Key: [hunter2-Secret]}\n"), "feeds[0].headers.Auth-Key"),
        (make(feed="api_key: hunter2-Secret\n", feed_type="taxii"), "feeds[0].collection"),
        (make().replace("${CT_PASSWORD}", "hunter2-Secret${oops"), "cybertrace.password"),
        (make(feed="username: u\npassword: ${CT_PASSWORD}\nbogus: 1\n"), "feeds[0].bogus"),
        (make("password_file: x\n"), "cybertrace.password_file"),
    ],
)
def test_secrets_are_not_in_error_messages(text: str, path: str) -> None:
    message = expect(text, path)
    assert "hunter2" not in message and "20240101" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/list.csv?apikey=KEY1", "https://h.example/list.csv?***"),
        ("https://user:KEY1@h.example/x", "https://***@h.example/x"),
        ("https://h.example/x", "https://h.example/x"),
    ],
)
def test_feed_urls_are_redacted_in_the_repr(url: str, shown: str) -> None:
    feed = parse(make().replace(URLHAUS, url), env=ENV).feeds[0]
    assert feed.url == url
    assert f"url={shown!r}" in repr(feed) and "KEY1" not in repr(feed)


def test_secrets_others_can_read_are_warned_about(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    path = tmp_path / "feedsync.yaml"
    inline = make(feed="headers: {Auth-Key: KEY, X-Env: '${X}'}\n").replace("${CT_PASSWORD}", "PW")
    path.write_text(inline)
    path.chmod(0o644)
    warnings = load(path, env={"X": "x"}).warnings
    assert warnings == (
        f"cybertrace.password: a secret written into {path}, which is readable by others "
        "(mode 0644); use ${VAR} or password_file",
        f"feeds[0].headers.Auth-Key: a secret written into {path}, which is readable by others "
        "(mode 0644); use ${VAR}",
    )
    assert parse(inline, env={"X": "x"}).warnings == ()  # no file, no mode
    path.chmod(0o640)
    assert load(path, env={"X": "x"}).warnings == ()
    path.write_text(make().replace("password: ${CT_PASSWORD}", "password_file: pw"))
    path.chmod(0o644)
    (tmp_path / "pw").chmod(0o604)
    [warning] = load(path, env={}).warnings
    secret_file = tmp_path / "pw"
    assert warning == (
        f"cybertrace.password_file: the secret file {secret_file} is readable by others (mode 0604)"
    )
    (tmp_path / "pw").chmod(0o600)
    assert load(path, env={}).warnings == ()
    path.write_text(make())
    assert load(path, env=ENV).warnings == ()  # ${CT_PASSWORD}: the secret is not in the file


def test_an_undecodable_secret_file_does_not_show_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\xffhunter2")
    text = make().replace("password: ${CT_PASSWORD}", "password_file: pw")
    message = expect(text, "cybertrace.password_file", "not UTF-8", base_dir=str(tmp_path))
    assert "hunter2" not in message and "xff" not in message


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "empty").write_text(" \n")
    text = make().replace("password: ${CT_PASSWORD}", "password_file: pw")
    loaded = parse(text, env={}, base_dir=str(tmp_path))
    assert loaded.cybertrace.password.reveal() == "from-file"
    missing = text.replace("pw", "missing")
    message = expect(missing, "cybertrace.password_file", "cannot read", base_dir=str(tmp_path))
    assert str(tmp_path / "missing") in message and "Errno 2" in message
    empty = text.replace("pw", "empty")
    expect(empty, "cybertrace.password_file", "is empty", base_dir=str(tmp_path))
    both = make("password_file: pw\n")
    expect(both, "cybertrace.password_file", "not both", base_dir=str(tmp_path))
    expect(make().replace("  password: ${CT_PASSWORD}\n", ""), "cybertrace.password", "required")
    misp = make(feed_type="misp", feed="api_key_file: pw\n")
    options = parse(misp, env=ENV, base_dir=str(tmp_path)).feeds[0].options_as(MispConfig)
    assert options.api_key == Secret("from-file")
    both_keys = make(feed_type="misp", feed="api_key: k\napi_key_file: pw\n")
    expect(both_keys, "feeds[0].api_key_file", "not both", base_dir=str(tmp_path))
    feed_file = make(feed="username: u\npassword_file: pw\n")
    loaded = parse(feed_file, env=ENV, base_dir=str(tmp_path))
    assert loaded.feeds[0].password == Secret("from-file")


# The environment


def test_environment_expansion() -> None:
    text = make().replace("username: feedsync", "username: ${CT_USER:-fall$$back}")
    assert parse(text, env=ENV).cybertrace.username == "fall$back"
    assert parse(text, env={**ENV, "CT_USER": "env-user"}).cybertrace.username == "env-user"
    assert parse(text, env={**ENV, "CT_USER": ""}).cybertrace.username == "fall$back"
    literal = make(feed="tags: ['$${NOT_EXPANDED}', a$$b, pa$word, '${A}${B}', '${A:-}z']\n")
    tags = parse(literal, env={**ENV, "A": "x", "B": "y"}).feeds[0].tags
    assert tags == ("${NOT_EXPANDED}", "a$b", "pa$word", "xy", "xz")


def test_expansion_happens_before_validation(tmp_path: Path) -> None:
    text = make(feed="schedule: ${SCHEDULE:-15m}\n").replace(URLHAUS, "${FEED_DIR}/list.txt")
    loaded = parse(text, env={**ENV, "FEED_DIR": "lists"}, base_dir=str(tmp_path))
    assert loaded.feeds[0].url == str(tmp_path / "lists" / "list.txt")
    assert loaded.feeds[0].schedule.seconds == 900
    bad = error(text, env={**ENV, "FEED_DIR": "/x", "SCHEDULE": "soon"})
    assert bad.startswith('feeds[0].schedule: "soon" is not a duration')


def test_an_unset_variable_names_the_key_path() -> None:
    message = error(make(), env={})
    assert message == "cybertrace.password: environment variable CT_PASSWORD is not set"
    nested = make(feed="tags: [a, '${TAG}']\n")
    expect(nested, "feeds[0].tags[1]", "environment variable TAG is not set")
    filters = make(feed="api_key: k\nfilters: {since: '${SINCE}'}\n", feed_type="misp")
    expect(filters, "feeds[0].filters.since", "environment variable SINCE is not set")


def test_variables_need_no_quotes_in_flow_mappings() -> None:
    text = "cybertrace: {url: http://x, username: u, password: ${P}}\n"
    text += "feeds: [{name: a, type: csv, url: /x, supplier: S, tags: [${T}, '$${T}']}]\n"
    loaded = parse(text, env={"P": "pw", "T": "t"})
    assert (loaded.cybertrace.password.reveal(), loaded.feeds[0].tags) == ("pw", ("t", "${T}"))


def test_keys_are_not_expanded() -> None:
    loaded = parse(make(feed="context: {'${FIELD}': threat}\n"), env={**ENV, "FIELD": "x"})
    assert loaded.feeds[0].options_as(CsvConfig).context == (("${FIELD}", "threat"),)


@pytest.mark.parametrize("value", ["${}", "${1X}", "${X", "${X-default}", "${X:default}"])
def test_malformed_variables(value: str) -> None:
    expect(make(feed=f"tags_field: '{value}'\n"), "feeds[0].tags_field", "bad ${...}")


def test_a_number_from_the_environment_is_a_string() -> None:
    message = error(make("concurrency: ${CONCURRENCY}\n"), env={**ENV, "CONCURRENCY": "4"})
    assert message == 'cybertrace.concurrency: expected an integer, got "4"'


# Paths


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ca.pem").write_text(TEST_CA_PEM)
    path = tmp_path / "etc" / "feedsync.yaml"
    text = make("verify_tls: ca.pem\n", "verify_tls: ../etc/ca.pem\n")
    path.write_text(text.replace(URLHAUS, "feeds/u.csv") + "state:\n  path: ../state/s.db\n")
    loaded = load(path, env=ENV)
    assert loaded.feeds[0].url == str(tmp_path / "etc" / "feeds" / "u.csv")
    assert loaded.state.path == str(tmp_path / "state" / "s.db")
    assert loaded.cybertrace.verify_tls == str(tmp_path / "etc" / "ca.pem")
    assert loaded.feeds[0].verify_tls == str(tmp_path / "etc" / "ca.pem")


def test_parse_resolves_against_base_dir_or_the_working_directory(tmp_path: Path) -> None:
    text = make().replace(URLHAUS, "u.csv")
    assert parse(text, env=ENV, base_dir=str(tmp_path)).feeds[0].url == str(tmp_path / "u.csv")
    assert parse(text, env=ENV).feeds[0].url == str(Path.cwd() / "u.csv")
    directory = make().replace(URLHAUS, "./misp/../circl/")
    loaded = parse(directory, env=ENV, base_dir=str(tmp_path))
    assert loaded.feeds[0].url == f"{tmp_path}/circl/"


@pytest.mark.parametrize(
    "url",
    [
        "/abs/list.txt",
        "file:///abs/list.txt",
        "file://rel/list.txt",
        "http://h.example/x?y=1",
        "HTTPS://h.example/",
    ],
)
def test_absolute_paths_and_urls_are_kept_as_given(url: str) -> None:
    assert parse(make().replace(URLHAUS, url), env=ENV).feeds[0].url == url


@pytest.mark.parametrize("url", ["ftp://h.example/x", "s3://bucket/x", "https:///x", "http://"])
def test_bad_feed_urls(url: str) -> None:
    expect(make().replace(URLHAUS, url), "feeds[0].url")


def test_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.yaml", env={})
    assert str(info.value).startswith(f"cannot read {tmp_path / 'missing.yaml'}: ")
    assert info.value.path == ""


# YAML


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("cybertrace:\n  url: [unclosed\nfeeds: []\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert str(info.value).startswith(f"{path}:3:")
    assert error("cybertrace:\n  url: x\n bad: y\n").startswith("<string>:3:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "<string>: the file is empty"),
        ("# only a comment\n", "<string>: the file is empty"),
        ("- a\n- b\n", "<string>:1:1: expected a mapping of settings, got a list"),
        ("\n\njust text\n", "<string>:3:1: expected a mapping of settings, got a string"),
    ],
)
def test_documents_that_are_not_a_mapping(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_unsafe_yaml_tags_are_refused() -> None:
    assert error("cybertrace: !!python/object/apply:os.system [true]\n").startswith("<string>:1:")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (make() + "cybertrace: {}\n", "cybertrace"),
        (make("username: again\n"), "cybertrace.username"),
        (make(feed="url: /again\n"), "feeds[0].url"),
        (
            make(suppliers="URLhaus: {confidence: 1, confidence: 2}\n"),
            "suppliers.URLhaus.confidence",
        ),
        (make(feed="context: {a: b}\ncontext: {c: d}\n"), "feeds[0].context"),
    ],
)
def test_duplicate_yaml_keys(text: str, path: str) -> None:
    expect(text, path, "key given twice (lines ")


def test_keys_of_other_types_are_not_duplicates_but_must_be_strings() -> None:
    message = error(make(feed="context: {1: a, '1': b}\n"))
    assert message.startswith("feeds[0].context.1: keys must be non-empty strings")


# Durations and schedules


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("1h 30m", 5400),
        ("90", 90),
        (" 90 ", 90),
        ("1.5", 1.5),
        ("0.5h", 1800),
        ("2H", 7200),
        (45, 45),
        (2.5, 2.5),
    ],
)
def test_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        *("", " ", "0", "0s", "-5m", "15x", "m", "1 hour", "30m1h", "1h1h", "1e3", "1 30"),
        *(0, -5, float("inf"), float("nan"), True, None, [1]),
    ],
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15m", Schedule("15m", 900.0, None)),
        ("90s", Schedule("90s", 90.0, None)),
        ("'*/5 * * * 1-5'", Schedule("*/5 * * * 1-5", None, "*/5 * * * 1-5")),
        ("'0 3 * * mon'", Schedule("0 3 * * mon", None, "0 3 * * mon")),
        ("'  7 * * * *  '", Schedule("7 * * * *", None, "7 * * * *")),
    ],
)
def test_schedules(value: str, expected: Schedule) -> None:
    assert parse(make(feed=f"schedule: {value}\n"), env=ENV).feeds[0].schedule == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("15x", '"15x" is not a duration (30s, 15m, 1h, 1d) or a 5-field cron line'),
        ("'61 * * * *'", '"61 * * * *" is not a valid cron line'),
        ("'* * * * 8'", '"* * * * 8" is not a valid cron line'),
        ("'*/0 * * * *'", "is not a valid cron line"),
        ("'a b c d e'", "is not a valid cron line"),
        ("'* * * *'", "is not a duration"),
        ("'* * * * * *'", "is not a duration"),
        ("0", "is not a positive duration"),
        ("[1h]", "got list"),
        ("true", "got bool"),
    ],
)
def test_bad_schedules(value: str, fragment: str) -> None:
    expect(make(feed=f"schedule: {value}\n"), "feeds[0].schedule", fragment)


# Source types


COMMON_FEED_KEYS = {
    *("name", "type", "url", "supplier", "schedule", "tags", "max_delete_ratio", "username"),
    *("password", "password_file", "headers", "verify_tls", "timeout", "enabled"),
    *("unmark_detections", "max_body_bytes", "proxy", "retry", "schedule_min_override"),
    *("expect_change_within",),
    *("exclude", "expand_cidr", "allowlist", "canaries", "max_growth_ratio"),
}


def test_source_type_table() -> None:
    assert {kind: own for kind, (own, _required) in SOURCE_TYPES.items()} == {
        "csv": {"indicator", "context", "tags_field", "comment", "delimiter", "header"}
        | {"encoding", "footer", "footer_count"},
        "misp": {"api_key", "api_key_file", "filters", "full_pull", "page_size"},
        "misp_feed": set(),
        "taxii": {"collection", "api_key", "api_key_file", "full_pull"},
    }
    message = error(make(feed="bogus: 1\n", feed_type="misp_feed"))
    assert set(message.split("known keys: ")[1].split(", ")) == COMMON_FEED_KEYS


TYPE_KEYS = {
    "csv": "indicator: 2\ncontext: {a: b, c: 3}\ntags_field: t\ncomment: ';'\ndelimiter: '|'\n"
    "header: true\nencoding: cp1252\nfooter: '; END'\nfooter_count: false\n",
    "misp": "api_key: k\nfilters: {to_ids: true}\n",
    "misp_feed": "",
    "taxii": "collection: c\napi_key: k\n",
}
COMMON_LINES = (
    "schedule: 1d\ntags: [t]\nmax_delete_ratio: 0.1\nusername: u\npassword: p\n"
    "headers: {X-A: b}\nverify_tls: false\ntimeout: 1\nenabled: true\n"
    "unmark_detections: false\nmax_body_bytes: 1\nexpect_change_within: 2d\n"
)


@pytest.mark.parametrize("kind", sorted(TYPE_KEYS))
def test_every_key_of_a_source_type_is_accepted(kind: str) -> None:
    feed = parse(make(feed=COMMON_LINES + TYPE_KEYS[kind], feed_type=kind), env=ENV).feeds[0]
    assert (feed.type, feed.username, feed.tags) == (kind, "u", ("t",))


@pytest.mark.parametrize(
    ("kind", "line", "hint"),
    [
        ("misp", "indicator: url", "(indicator is only for csv feeds)"),
        ("taxii", "filters: {}", "(filters is only for misp feeds)"),
        ("misp_feed", "api_key: k", "(api_key is only for misp and taxii feeds)"),
        ("csv", "collection: c", "(collection is only for taxii feeds)"),
        ("csv", "api_key_file: k", "(api_key_file is only for misp and taxii feeds)"),
        ("misp", "comment: ';'", "(comment is only for csv feeds)"),
        ("taxii", "encoding: latin-1", "(encoding is only for csv feeds)"),
        ("misp_feed", "footer: '# END'", "(footer is only for csv feeds)"),
        ("csv", "contxt: {}", "comment, context, delimiter"),
    ],
)
def test_keys_of_other_source_types_are_refused(kind: str, line: str, hint: str) -> None:
    text = make(feed=TYPE_KEYS[kind] + line + "\n", feed_type=kind)
    key = line.partition(":")[0]
    message = expect(text, f"feeds[0].{key}", "unknown key; known keys: ")
    assert hint in message


def test_source_type_requirements() -> None:
    expect(make(feed_type="taxii"), "feeds[0].collection", "required for a taxii feed")
    expect(make(feed_type="misp"), "feeds[0].api_key", "required for a misp feed")
    taxii = parse(make(feed_type="taxii", feed="collection: c\n"), env=ENV).feeds[0]
    assert taxii.options == TaxiiConfig(collection="c", api_key=None)


# Every other rule: the error starts with the key path


def case(path: str, text: str, fragment: str = "") -> tuple[str, str, str]:
    return (text, path, fragment)


CASES = [
    case(
        "colour",
        make() + "colour: red\n",
        "unknown key; known keys: allowlist, canaries, cybertrace, exclude, feeds",
    ),
    case("cybertrace", "feeds: [{name: a}]\n", "required"),
    case("cybertrace", "cybertrace: [a]\nfeeds: [{name: a}]\n", "expected a mapping, got a list"),
    case("feeds", make().split("feeds:")[0], "required: a non-empty list of feeds, got nothing"),
    case("feeds", make().split("feeds:")[0] + "feeds: []\n", "got an empty list"),
    case("feeds", make().split("feeds:")[0] + "feeds: {a: 1}\n", "got a mapping"),
    case("cybertrace.colour", make("colour: red\n"), "unknown key; known keys: api_version, "),
    case("cybertrace.url", make().replace("  url: https://ct.example:443/\n", ""), "required"),
    case("cybertrace.url", make().replace("https://ct", "ftp://ct"), "expected http(s)://"),
    case("cybertrace.url", make().replace("443/", "443/api"), "no path"),
    case("cybertrace.url", make().replace("443/", "443/?a=1"), "no path"),
    case("cybertrace.url", make().replace("https://ct", "https://u:p@ct"), "or user"),
    case("cybertrace.url", make().replace(":443/", ":99999/"), "expected http(s)://"),
    case("cybertrace.url", make().replace("https://ct.example:443/", "ct.example"), "expected"),
    case("cybertrace.username", make().replace("  username: feedsync\n", ""), "required"),
    case("cybertrace.username", make().replace("username: feedsync", "username: ''"), "empty"),
    case("cybertrace.username", make().replace("username: feedsync", "username: 7"), "got 7"),
    case("cybertrace.api_version", make("api_version: '2.0'\n"), '"2.0" is not one of 1.0, '),
    case("cybertrace.api_version", make("api_version: 1\n"), "expected a quoted string, got"),
    case("cybertrace.api_version", make("api_version: '1.25'\n"), '"1.25" is not one of'),
    case("cybertrace.tenant", make("tenant: acme\n"), "needs api_version 1.3 or auto"),
    case("cybertrace.tenant", make("api_version: '1.3'\ntenant: 5\n"), "expected a string"),
    case("cybertrace.verify_tls", make("verify_tls: /no/such/ca.pem\n"), "not an existing file"),
    case("cybertrace.verify_tls", make("verify_tls: 1\n"), "got 1"),
    case("cybertrace.verify_tls", make("verify_tls: 'yes please'\n"), "not an existing file"),
    case("cybertrace.client_cert", make("client_cert: /no/cert.pem\n"), "not an existing file"),
    case("cybertrace.client_key", make("client_key: /etc/hostname\n"), "needs client_cert"),
    case("cybertrace.timeout", make("timeout: 0\n"), "0 is out of range; allowed: (0, 86400]"),
    case("cybertrace.timeout", make("timeout: -1.5\n"), "out of range"),
    case("cybertrace.timeout", make("timeout: fast\n"), 'expected a number, got "fast"'),
    case("cybertrace.timeout", make("timeout: true\n"), "expected a number, got true"),
    case("cybertrace.timeout", make("timeout: .inf\n"), "expected a finite number"),
    case("cybertrace.timeout", make("timeout: .nan\n"), "expected a finite number"),
    case("cybertrace.concurrency", make("concurrency: two\n"), 'expected an integer, got "two"'),
    case("cybertrace.concurrency", make("concurrency: 0\n"), "0 is out of range; allowed: [1, 8]"),
    case("cybertrace.concurrency", make("concurrency: 9\n"), "9 is out of range"),
    case("cybertrace.concurrency", make("concurrency: 2.0\n"), "expected an integer, got 2.0"),
    case("cybertrace.concurrency", make("concurrency: true\n"), "expected an integer, got true"),
    case("cybertrace.max_batch_bytes", make("max_batch_bytes: 1023\n"), "[1024, 134217728]"),
    case("cybertrace.max_batch_bytes", make("max_batch_bytes: 134217729\n"), "out of range"),
    case("cybertrace.max_batch_indicators", make("max_batch_indicators: 0\n"), "[1, 10000000]"),
    case("cybertrace.tag_weight", make("tag_weight: 6\n"), "[0, 5]"),
    case("cybertrace.tag_weight", make("tag_weight: -1\n"), "[0, 5]"),
    case("cybertrace.refresh_fraction", make("refresh_fraction: 1\n"), "(0, 1)"),
    case("cybertrace.retry", make("retry: [1]\n"), "expected a mapping, got a list"),
    case("cybertrace.retry.attempts", make("retry: {attempts: 0}\n"), "[1, 100]"),
    case("cybertrace.retry.initial_delay", make("retry: {initial_delay: 0}\n"), "(0, 3600]"),
    case("cybertrace.retry.max_delay", make("retry: {initial_delay: 5, max_delay: 4}\n"), "[5, "),
    case("cybertrace.retry.max_delay", make("retry: {max_delay: 0.5}\n"), "[1, 86400]"),
    case("cybertrace.retry.jitter", make("retry: {jitter: 1}\n"), "unknown key; known keys: att"),
    case("state", make(more="state: /x.db\n"), "expected a mapping, got a string"),
    case("state.path", make(more="state: {path: 5}\n"), "expected a string, got 5"),
    case("state.file", make(more="state: {file: x}\n"), "unknown key; known keys: journal_max_age"),
    case("state.journal_max_rows", make(more="state: {journal_max_rows: 10}\n"), "out of range"),
    case("state.journal_max_age", make(more="state: {journal_max_age: 1m}\n"), "out of range"),
    case("provenance", make(more="provenance: {feeds: x, last_seen: x}\n"), "must differ"),
    case("provenance.feeds", make(more="provenance: {feeds: ''}\n"), "must not be empty"),
    case("provenance.since", make(more="provenance: {since: x}\n"), "unknown key"),
    case("server.listen", make(more="server: {listen: 9464}\n"), "expected a string, got 9464"),
    case("server.listen", make(more="server: {listen: '9464'}\n"), "is not HOST:PORT"),
    case("server.listen", make(more="server: {listen: 'h:65536'}\n"), "is not HOST:PORT"),
    case("server.listen", make(more="server: {listen: '::1:9464'}\n"), "is not HOST:PORT"),
    case("server.listen", make(more="server: {listen: ':9464'}\n"), "is not HOST:PORT"),
    case("server.port", make(more="server: {port: 1}\n"), "unknown key; known keys: listen"),
    case("suppliers", make(suppliers="") + "suppliers: [URLhaus]\n", "expected a mapping"),
    case("suppliers.URL haus", make(suppliers="URL haus: {confidence: 1}\n"), "not a valid name"),
    case("suppliers.FalsePositive", make(suppliers="FalsePositive: {confidence: 1}\n"), "built"),
    case("suppliers.InternalTI", make(suppliers="InternalTI: {confidence: 1}\n"), "built into"),
    case("suppliers.Foo", make(suppliers="Foo: {confidence: 1}\n"), "no feed uses this supplier"),
    case("suppliers.URLhaus", make(suppliers="URLhaus: 80\n"), "expected a mapping"),
    case("suppliers.URLhaus", make(suppliers="URLhaus:\n"), "required"),
    case("suppliers.URLhaus.retention", make(suppliers="URLhaus: {retention: -1}\n"), "[0, "),
    case("suppliers.URLhaus.confidence", make(suppliers="URLhaus: {confidence: 101}\n"), "[0, "),
    case("suppliers.URLhaus.confidence", make(suppliers="URLhaus: {confidence: hi}\n"), "integer"),
    case(
        "suppliers.URLhaus.retention", make(suppliers="URLhaus: {confidence: 1, retention: -1}\n")
    ),
    case("suppliers.URLhaus.vendor", make(suppliers="URLhaus: {confidence: 1, vendor: 5}\n")),
    case("suppliers.URLhaus.name", make(suppliers="URLhaus: {confidence: 1, name: x}\n"), "unkn"),
    case("feeds[1]", make(more="  - just-a-name\n"), "expected a mapping, got a string"),
    case("feeds[0].type", make().replace("    type: csv\n", ""), "required; one of csv, misp, "),
    case("feeds[0].type", make(feed_type="rss"), '"rss" is not one of csv, misp, misp_feed, taxii'),
    case("feeds[0].name", make().replace("  - name: urlhaus\n", "  -\n"), "required"),
    case("feeds[0].name", make().replace("name: urlhaus", "name: url haus"), "not a valid name"),
    case("feeds[0].name", make().replace("name: urlhaus", "name: url/haus"), "0-9 _ . -,"),
    case("feeds[0].supplier", make().replace("supplier: URLhaus", "supplier: URL.haus"), "[A-Za-z"),
    case("feeds[0].supplier", make().replace("    supplier: URLhaus\n", ""), "required"),
    case("feeds[0].url", make().replace(f"    url: {URLHAUS}\n", ""), "required"),
    case("feeds[0].url", make().replace(URLHAUS, "ftp://x.example/"), "ftp:// is not supported"),
    case("feeds[0].indicator", make(feed="indicator: 0\n"), "columns are numbered from 1"),
    case("feeds[0].indicator", make(feed="indicator: ''\n"), "columns are numbered from 1"),
    case("feeds[0].indicator", make(feed="indicator: true\n"), "a column name or a 1-based index"),
    case("feeds[0].indicator", make(feed="indicator: 1.5\n"), "got 1.5"),
    case("feeds[0].context", make(feed="context: [a]\n"), "expected a mapping, got a list"),
    case("feeds[0].context.asn", make(feed="context: {asn: 2.5}\n"), "index, got 2.5"),
    case("feeds[0].context.threat", make(feed="context: {threat: ''}\n"), "must not be empty"),
    case("feeds[0].context.threat", make(feed="context: {threat: null}\n"), "required"),
    case("feeds[0].context.", make(feed="context: {'': threat}\n"), "keys must be non-empty"),
    case("feeds[0].tags", make(feed="tags: abusech\n"), "expected a list of strings, got"),
    case("feeds[0].tags[1]", make(feed="tags: [a, '']\n"), "expected a non-empty string"),
    case("feeds[0].tags[0]", make(feed="tags: [{a: b}]\n"), "got a mapping"),
    case("feeds[0].tags_field", make(feed="tags_field: [3]\n"), "expected a column name"),
    case("feeds[0].max_delete_ratio", make(feed="max_delete_ratio: 0\n"), "allowed: (0, 1]"),
    case("feeds[0].max_delete_ratio", make(feed="max_delete_ratio: 1.5\n"), "allowed: (0, 1]"),
    case("feeds[0].comment", make(feed="comment: ''\n"), "must not be empty"),
    case("feeds[0].delimiter", make(feed="delimiter: ',,'\n"), '",," is not one character'),
    case("feeds[0].delimiter", make(feed="delimiter: ''\n"), "must not be empty"),
    case("feeds[0].header", make(feed="header: 'yes'\n"), 'expected true or false, got "yes"'),
    case("feeds[0].username", make(feed="username: 5\n"), "expected a string"),
    case("feeds[0].password", make(feed="password: p\n"), "needs username"),
    case("feeds[0].headers", make(feed="headers: [a]\n"), "expected a mapping"),
    case("feeds[0].headers.Bad Name", make(feed="headers: {Bad Name: v}\n"), "not a valid name"),
    case("feeds[0].headers.X-A", make(feed="headers: {X-A: ''}\n"), "must not be empty"),
    case("feeds[0].verify_tls", make(feed="verify_tls: /no/ca.pem\n"), "not an existing file"),
    case("feeds[0].timeout", make(feed="timeout: 0\n"), "out of range"),
    case("feeds[0].filters", make(feed="api_key: k\nfilters: [a]\n", feed_type="misp"), "mapping"),
    case("feeds[0].collection", make(feed="collection: 5\n", feed_type="taxii"), "a string"),
    case("feeds[0].api_key", make(feed="api_key: ''\n", feed_type="misp"), "must not be empty"),
    case("feeds[0].unmark_detections", make(feed="unmark_detections: true\n"), "FalsePositive"),
    case("feeds[0].unmark_detections", make(feed="unmark_detections: 1\n"), "true or false"),
    case("feeds[0].enabled", make(feed="enabled: 'no'\n"), 'expected true or false, got "no"'),
    case("feeds[0].max_body_bytes", make(feed="max_body_bytes: 0\n"), "[1, 1099511627776]"),
    case(
        "feeds[0].contxt",
        make(feed="contxt: {}\n"),
        "unknown key; known keys: allowlist, canaries, comment, context",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), CASES)
def test_errors_name_the_key_path(text: str, path: str, fragment: str) -> None:
    expect(text, path, fragment)


def test_exact_messages() -> None:
    assert error(make("concurrency: two\n")) == (
        'cybertrace.concurrency: expected an integer, got "two"'
    )
    assert error(make(feed="schedule: 15x\n")) == (
        'feeds[0].schedule: "15x" is not a duration (30s, 15m, 1h, 1d) or a 5-field cron line'
    )
    more = "  - {name: b, type: csv, url: /b, supplier: URLhaus}\n"
    more += "  - {name: urlhaus, type: csv, url: /u, supplier: URLhaus}\n"
    assert error(make(more=more)) == 'feeds[2].name: duplicate feed name "urlhaus" (also feeds[0])'


# Accepted values


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("'1.2'", "1.2"),
        ("'1.1'", "1.1"),
        ('"1.0"', "1.0"),
        ("'1.3'", "1.3"),
        ("auto", "auto"),
    ],
)
def test_api_versions(line: str, version: str) -> None:
    assert parse(make(f"api_version: {line}\n"), env=ENV).cybertrace.api_version == version


@pytest.mark.parametrize("version", ["'1.3'", "auto"])
def test_tenant_with_multitenancy(version: str) -> None:
    loaded = parse(make(f"api_version: {version}\ntenant: acme\n"), env=ENV)
    assert loaded.cybertrace.tenant == "acme"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:9464", "::1", 9464),
        ("[::]:65535", "::", 65535),
        ("metrics.local:80", "metrics.local", 80),
    ],
)
def test_listen(listen: str, host: str, port: int) -> None:
    loaded = parse(make(more=f"server: {{listen: '{listen}'}}\n"), env=ENV)
    assert (loaded.server.host, loaded.server.port) == (host, port)


@pytest.mark.parametrize(("line", "indicator"), [("3", 3), ("'3'", "3"), ("url", "url")])
def test_indicator_is_an_index_or_a_name(line: str, indicator: str | int) -> None:
    feed = parse(make(feed=f"indicator: {line}\n"), env=ENV).feeds[0]
    assert feed.options_as(CsvConfig).indicator == indicator


def test_ints_are_accepted_as_floats_and_the_url_loses_its_slash() -> None:
    loaded = parse(make("timeout: 10\nretry: {initial_delay: 1, max_delay: 1}\n"), env=ENV)
    assert loaded.cybertrace.timeout == 10.0 and isinstance(loaded.cybertrace.timeout, float)
    assert loaded.cybertrace.retry == RetryConfig(5, 1.0, 1.0)
    assert loaded.cybertrace.url == "https://ct.example:443"
    http = make().replace("https://ct.example:443/", "http://127.0.0.1:9443")
    assert parse(http, env=ENV).cybertrace.url == "http://127.0.0.1:9443"


def test_supplier_defaults_shape_suppliers_without_an_entry() -> None:
    loaded = parse(
        SUPPLIERS_BASE + "supplier_defaults: {confidence: 70, vendor: soc}\n"
        "suppliers:\n  A: {retention: 60}\n" + SUPPLIERS_FEEDS
    )
    assert loaded.supplier_defaults == SupplierDefaults(70, 10080, "soc")
    assert loaded.supplier_settings("A") == SupplierConfig("A", 70, 60, None, explicit=True)
    assert loaded.supplier_settings("B") == SupplierConfig("B", 70, 10080, "soc", explicit=False)
    assert loaded.warnings == ()


def test_supplier_settings_default_to_seven_days_of_retention() -> None:
    loaded = parse(SUPPLIERS_BASE + SUPPLIERS_FEEDS)
    assert loaded.supplier_settings("B") == SupplierConfig(
        "B", 50, 10080, "feedsync", explicit=False
    )


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("supplier_defaults: {retention: 0}\n", "supplier_defaults.retention"),
        ("suppliers:\n  A: {confidence: 1, retention: 0}\n", "suppliers.A.retention"),
    ],
)
def test_an_explicit_retention_of_0_is_kept_with_a_warning(section: str, path: str) -> None:
    loaded = parse(SUPPLIERS_BASE + section + SUPPLIERS_FEEDS)
    [warning] = loaded.warnings
    assert warning.startswith(f"{path}: 0 is sent as written")
    assert "does not say what a retention of 0 means" in warning


@pytest.mark.parametrize(
    ("section", "path", "message"),
    [
        ("supplier_defaults: {confidence: 101}\n", "supplier_defaults.confidence", "[0, 100]"),
        ("supplier_defaults: {retention: -1}\n", "supplier_defaults.retention", "[0, "),
        ("supplier_defaults: {colour: red}\n", "supplier_defaults.colour", "unknown key"),
        ("supplier_defaults: {vendor: 5}\n", "supplier_defaults.vendor", "a string"),
    ],
)
def test_supplier_defaults_errors_name_the_key(section: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(SUPPLIERS_BASE + section + SUPPLIERS_FEEDS)
    assert info.value.path == path and message in info.value.message


@pytest.mark.parametrize("tenant", ["a/b", " lead", "trail ", "x?y", "50%", "t\\u0007", "x" * 129])
def test_tenant_names_that_would_leave_their_path_segment_are_refused(tenant: str) -> None:
    text = SUPPLIERS_BASE.replace('api_version: "1.2"', f'api_version: "1.3"\n  tenant: {tenant!r}')
    with pytest.raises(ConfigError) as info:
        parse(text + SUPPLIERS_FEEDS)
    assert info.value.path == "cybertrace.tenant"


def test_the_425_budget_is_a_duration() -> None:
    retry = "  username: u\n  retry: {initializing: 30m}\n"
    text = SUPPLIERS_BASE.replace("  username: u\n", retry)
    assert parse(text + SUPPLIERS_FEEDS).cybertrace.retry.initializing == 1800.0


SUPPLIERS_BASE = """\
cybertrace:
  url: https://ct.example
  api_version: "1.2"
  username: u
  password: p
"""
SUPPLIERS_FEEDS = """\
feeds:
  - {name: a, type: csv, url: https://f.example/a, supplier: A}
  - {name: b, type: csv, url: https://f.example/b, supplier: B}
"""


# How a line-based feed's bytes are read


def test_encoding_defaults_to_utf8_and_takes_any_ascii_compatible_codec() -> None:
    assert parse(make(), env=ENV).feeds[0].options_as(CsvConfig).encoding == "utf-8"
    for name, canonical in [("latin-1", "iso8859-1"), ("CP1252", "cp1252"), ("utf8", "utf-8")]:
        feed = parse(make(feed=f"encoding: {name}\n"), env=ENV).feeds[0].options_as(CsvConfig)
        # One name per codec: two spellings read a body alike, and the line index knows it.
        assert feed.encoding == canonical


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("latin-9000", '"latin-9000" is not a text encoding Python knows'),
        ("base64", '"base64" is not a text encoding'),  # a codec, but bytes to bytes
        ("utf-16", '"utf-16" does not write ASCII as ASCII'),  # lines are split at b"\n"
        ("utf-7", "does not write ASCII as ASCII"),
        ("cp500", "does not write ASCII as ASCII"),  # EBCDIC
        ("''", "must not be empty"),
        ("8", "expected a string, got 8"),
    ],
)
def test_bad_encoding_is_refused_naming_the_key(value: str, fragment: str) -> None:
    text = make(more=f"  - {{name: two, type: csv, url: /x, supplier: S, encoding: {value}}}\n")
    expect(text, "feeds[1].encoding", fragment)


def test_footer_is_a_comment_line_and_its_count_needs_it() -> None:
    feed = parse(make(feed="footer: '# END'\n"), env=ENV).feeds[0].options_as(CsvConfig)
    assert (feed.footer, feed.footer_count) == ("# END", True)
    text = make(feed="footer: '# END'\nfooter_count: false\n")
    assert parse(text, env=ENV).feeds[0].options_as(CsvConfig).footer_count is False
    assert parse(make(), env=ENV).feeds[0].options_as(CsvConfig).footer is None
    # A footer that is no comment would also be read as a data row.
    expect(make(feed="footer: END\n"), "feeds[0].footer", "must start with the feed's comment")
    expect(make(feed="footer: '# END '\n"), "feeds[0].footer", "no blanks at either end")
    expect(make(feed="footer_count: true\n"), "feeds[0].footer_count", "needs footer")


# Each feed type's own settings are in its options class


def test_a_feed_holds_only_its_own_type_s_options() -> None:
    csv = FeedConfig("a", "csv", "/a", "S")
    assert csv.options == CsvConfig()  # the type's defaults when none are given
    assert FeedConfig("t", "taxii", "/t", "S").options == TaxiiConfig()
    assert not hasattr(csv, "comment") and not hasattr(csv, "api_key")
    with pytest.raises(TypeError, match="a csv feed takes CsvConfig"):
        FeedConfig("a", "csv", "/a", "S", options=MispConfig())
    with pytest.raises(TypeError, match="feed a is a csv feed, not MispConfig"):
        csv.options_as(MispConfig)
    loaded = parse(make(feed_type="misp", feed="api_key: k\npage_size: 5\n"), env=ENV).feeds[0]
    assert loaded.options_as(MispConfig).page_size == 5
