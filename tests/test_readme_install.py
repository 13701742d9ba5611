"""The README's "Running it as a service", run as written in a scratch root.

Its install block runs in bash with /etc/ moved under a temporary directory
(the venv and pip steps aside: this checkout's feedsync stands in for
/opt/feedsync/bin/feedsync), its secret typed on stdin; then the edits its
prose asks for, and its `feedsync check` line with $CREDENTIALS_DIRECTORY.
Walked by hand on Debian 12 first (issue 15): deleting the feeds one does not
want left their `suppliers:` entries, which check refuses, and the README did
not say so.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTION = README.split("## Running it as a service", 1)[1].split("\n## ", 1)[0]
FEEDSYNC = Path(sys.executable).with_name("feedsync")
# Not run here: the package manager and the venv this checkout already is.
SKIPPED = ("apt-get ", "python3 -m venv ", "/opt/feedsync/bin/pip ")


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", SECTION, re.DOTALL)


def rooted(text: str, root: Path) -> str:
    text = text.replace("/opt/feedsync/bin/feedsync", str(FEEDSYNC))
    return re.sub(r"(?<![\w.])/(etc|usr/local)/", rf"{root}/\1/", text)


def without_feed(config: str, name: str) -> str:
    """The example with one feed's entry (up to the next feed or comment) cut."""
    pattern = rf"(?ms)^  - name: {re.escape(name)}\b.*?(?=^  - name: |^  #|\Z)"
    cut, count = re.subn(pattern, "", config)
    assert count == 1, name
    return cut


def test_every_secret_the_example_names_is_one_the_readme_mentions() -> None:
    example = (ROOT / "config" / "example.yaml").read_text()
    live = re.sub(r"(?m)(^|\s)#.*$", "", example)  # comments cut: their ${VAR} is prose
    named = set(re.findall(r"\$\{([A-Z_]+)\}", live))
    assert named, "the example names its secrets"
    assert {n for n in named if n not in SECTION} == set()


@pytest.mark.skipif(shutil.which("bash") is None, reason="the README's commands are bash")
def test_the_readme_install_and_check_work_as_written(tmp_path: Path) -> None:
    assert FEEDSYNC.exists(), f"{FEEDSYNC}: pip install -e . makes it"
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    (tmp_path / "usr" / "local" / "bin").mkdir(parents=True)
    [install, *_] = blocks("sh")
    script = "\n".join(
        rooted(line, tmp_path) for line in install.splitlines() if not line.startswith(SKIPPED)
    )
    # CI runs as root: nothing may reach the machine's own directories.
    outside = re.findall(
        r"(?<![\w.])/(?:etc|usr|var|opt|lib|run)/\S*",
        script.replace(f"{tmp_path}/", "ROOT/").replace(str(FEEDSYNC), "FEEDSYNC"),
    )
    assert not outside and "systemctl" not in script, outside
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        input="typed-Pa55\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc" / "feedsync"
    secret = etc / "credentials" / "cybertrace-password"
    assert secret.read_text() == "typed-Pa55\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "credentials").stat().st_mode) == 0o700
    assert stat.S_IMODE((etc / "feedsync.env").stat().st_mode) == 0o600
    # The README's other commands say plain `feedsync`: root's PATH has /usr/local/bin.
    on_path = tmp_path / "usr" / "local" / "bin" / "feedsync"
    assert subprocess.run([on_path, "--version"], capture_output=True, check=False).returncode == 0

    # The edits the README asks for: the feeds that want secrets go, with the
    # supplier only they used; the password becomes the credential it shows.
    config = (etc / "feedsync.yaml").read_text()
    config = without_feed(without_feed(config, "urlhaus"), "misp-local")
    assert "the `suppliers:` entries no feed uses" in SECTION, "check refuses them"
    config = re.sub(r"(?m)^  URLhaus: .*\n", "", config)
    [credential, *_] = blocks("yaml")
    [password_file] = [ln for ln in credential.splitlines() if "password_file:" in ln]
    config = config.replace("  password: ${CYBERTRACE_PASSWORD}", password_file, 1)
    (etc / "feedsync.yaml").write_text(config)

    [check] = [ln for ln in blocks("sh")[1].splitlines() if " check " in ln]
    checked = subprocess.run(
        ["bash", "-c", rooted(check, tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "feedsync.yaml: ok (" in checked.stdout
