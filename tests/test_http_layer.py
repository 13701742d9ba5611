"""The one HTTP layer (feedsync._http.translate): which failure each exception
stands for, and a feed whose spool cannot be made failing alone and clearly."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from conftest import PASSWORD, FeedServer, run_cli
from multidict import CIMultiDict, CIMultiDictProxy
from test_cli import write_config
from yarl import URL

from feedsync._http import Failure, failure_of, translate
from feedsync.emulator import Emulator
from feedsync.errors import FetchError, TransientFetchError
from feedsync.model import Validators
from feedsync.proxy import DIRECT, Route
from feedsync.sources.fetch import Request, fetch
from feedsync.sources.transport import fetch_failure

INFO = aiohttp.RequestInfo(URL("http://20.0.0.1/"), "GET", CIMultiDictProxy(CIMultiDict()))
CASES: list[tuple[BaseException, str, bool]] = [
    (TimeoutError(), "timeout", True),
    (aiohttp.ServerTimeoutError("read"), "timeout", True),  # a ClientError and a TimeoutError
    (aiohttp.ServerDisconnectedError(), "connection", True),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection", True),
    (ConnectionResetError(104, "Connection reset by peer"), "connection", True),
    (aiohttp.ClientPayloadError("Response payload is not completed"), "cut_short", True),
    (FileExistsError(17, "File exists", "/var/lib/feedsync/state.db.d/spool"), "file", False),
    (aiohttp.InvalidURL("nowhere"), "request", False),
    # A ClientResponseError is the parser's, but for the subclasses that are not.
    (aiohttp.ClientResponseError(INFO, (), message="Invalid header"), "framing", False),
    (aiohttp.TooManyRedirects(INFO, ()), "request", False),
]


@pytest.mark.parametrize(("exc", "kind", "transient"), CASES, ids=lambda v: str(v)[:30])
def test_each_exception_maps_to_its_most_specific_kind(
    exc: BaseException, kind: str, transient: bool
) -> None:
    failure = failure_of(exc)
    assert failure.kind == kind
    assert failure.transient is transient


def test_a_file_failure_names_the_file() -> None:
    failure = failure_of(PermissionError(13, "Permission denied", "/spool/x.body"))
    assert failure.reason == "/spool/x.body: Permission denied"


def test_a_refused_tunnel_is_final_only_when_it_asks_for_credentials() -> None:
    assert not Failure("proxy_refused", "HTTP 407", 407).transient
    assert Failure("proxy_refused", "HTTP 502", 502).transient
    route = Route("http://20.0.0.9:3128")
    said = Failure("proxy_refused", "HTTP 502", 502).said(route)
    assert said == "proxy http://20.0.0.9:3128 refused the tunnel: HTTP 502"


def test_translate_raises_the_callers_error_redacted_and_lets_its_own_pass() -> None:
    def errors(failure: Failure) -> FetchError:
        return fetch_failure("f", "https://20.0.0.1/x", DIRECT, 5, failure)

    with pytest.raises(TransientFetchError) as caught, translate(errors, ("s3cret",)):
        raise aiohttp.ClientConnectionError("cannot connect to https://20.0.0.1/x?token=s3cret")
    message = str(caught.value)
    assert message.startswith("feed f: cannot fetch https://20.0.0.1/x: cannot connect")
    assert "s3cret" not in message and "s3cret" not in str(caught.value.__cause__)

    with pytest.raises(FetchError, match="no answer within 5 s"), translate(errors):
        raise TimeoutError
    own = FetchError("f", "already said")
    with pytest.raises(FetchError) as passed, translate(errors):
        raise own
    assert passed.value is own


async def test_a_local_feed_that_cannot_be_read_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone.txt"
    request = Request(
        feed="f", url=str(missing), headers={}, verify_tls=True, timeout=5, max_bytes=100
    )
    with pytest.raises(FetchError) as caught:
        await fetch(request, Validators(), tmp_path / "spool")
    assert (
        str(caught.value) == f"feed f: cannot read the feed: {missing}: No such file or directory"
    )


async def test_a_file_where_the_spool_should_be_fails_that_feed_alone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = write_config(tmp_path, emulator.url, feed_server.set("list.txt", "a.example\n"))
    local = tmp_path / "local.txt"  # read in place: it needs no spool
    local.write_text("c.example\n")
    feed = f"  - name: local\n    type: csv\n    url: {local}\n    supplier: Demo\n"
    path.write_text(path.read_text() + feed)
    spool = tmp_path / "state.db.d" / "spool"
    spool.parent.mkdir()
    spool.write_text("not a directory")

    assert await run_cli("sync", "-c", str(path)) == 1
    out, err = capsys.readouterr()
    assert f"list: {spool} is not a directory; feedsync spools downloads there" in out
    assert "Traceback" not in out + err
    assert "local" in out and set(emulator.indicators("Demo")) == {"c.example"}

    assert await run_cli("history", "-c", str(path), "--json") == 0
    runs = json.loads(capsys.readouterr().out)
    results = {run["feed"]: (run["result"], run["error"]) for run in runs}
    assert results["local"] == ("ok", None)
    assert results["list"][0] == "failed" and str(spool) in results["list"][1]
