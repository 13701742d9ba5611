"""Hostile configurations (issue 13 items 12-16): alias bombs, values that would
crash the scheduler, secret files that are not files, feed names that are not
path components, and TLS settings `check` must load."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from feedsync.config import parse
from feedsync.errors import ConfigError

PASSWORD = "hunter2-Secret"
ENV = {"CT_PASSWORD": PASSWORD}


def make(cybertrace: str = "", feed: str = "", *, more: str = "") -> str:
    return (
        "cybertrace:\n"
        "  url: https://ct.example:443/\n"
        "  username: feedsync\n"
        "  password: ${CT_PASSWORD}\n"
        + textwrap.indent(cybertrace, "  ")
        + "feeds:\n"
        "  - name: urlhaus\n"
        "    type: csv\n"
        "    url: https://urlhaus.abuse.ch/downloads/csv_recent/\n"
        "    supplier: URLhaus\n" + textwrap.indent(feed, "    ") + more
    )


def refused(text: str, base_dir: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env=ENV if env is None else env, base_dir=base_dir)
    return str(info.value)


# 13: aliases

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _limit_memory() -> None:
    # Without the refusal this config expands to ~10 GB: fail in the child, not the host.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_billion_laughs_config_is_refused_at_its_first_anchor_quickly(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(make() + BOMB)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "feedsync.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
        env={**os.environ, **ENV},
        check=False,
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    line = make().count("\n") + 1
    assert f"bomb.yaml:{line}:4: anchors and aliases" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("cybertrace: &ct\n  url: https://x\n", "1:13"),
        (make(feed="tags: &t [a]\n"), "10:11"),
        (make(more="  - *first\n").replace("  - name:", "  - &first\n    name:"), "6:5"),
        (make(feed="context: {<<: *base}\n"), "10:19"),
    ],
)
def test_any_anchor_or_alias_is_refused_naming_its_line(text: str, where: str) -> None:
    message = refused(text)
    assert message.startswith(f"<string>:{where}: anchors and aliases"), message


def test_strings_with_ampersand_or_star_still_load_when_quoted() -> None:
    loaded = parse(make(feed='tags: ["&amp", "*star"]\nschedule: "*/5 * * * *"\n'), env=ENV)
    assert loaded.feeds[0].tags == ("&amp", "*star")
    assert loaded.feeds[0].schedule.cron == "*/5 * * * *"
