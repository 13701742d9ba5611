"""TLS: verified by default, a CA bundle by path, unverified only when asked (with a warning)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, ConfigFactory

from feedsync._http import ssl_context
from feedsync.cybertrace import CyberTrace
from feedsync.emulator import Emulator
from feedsync.errors import CyberTraceError, TLSError


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (out / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=feedsync",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "client.pem",
    )
    return out


@pytest.fixture
async def tls_emulator(certificates: Path) -> AsyncIterator[Emulator]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    emulator = Emulator(user=USER, password=PASSWORD)
    await emulator.start(tls=context)
    yield emulator
    await emulator.stop()


FEED = "- {name: x, type: csv, url: /dev/null, supplier: FalsePositive}\n"


async def test_self_signed_fails_without_the_ca(
    tls_emulator: Emulator, make_config: ConfigFactory
) -> None:
    loaded = make_config(tls_emulator.url, FEED)
    async with CyberTrace(loaded.cybertrace) as client:
        with pytest.raises(TLSError, match="verify_tls"):
            await client.supplier("FalsePositive")
    assert tls_emulator.requests == []


async def test_ca_bundle_path_verifies(
    tls_emulator: Emulator, make_config: ConfigFactory, certificates: Path
) -> None:
    loaded = make_config(
        tls_emulator.url, FEED, cybertrace=f"verify_tls: {certificates / 'ca.pem'}\n"
    )
    async with CyberTrace(loaded.cybertrace) as client:
        assert await client.supplier("FalsePositive") is not None


async def test_verification_off_works_and_warns(
    tls_emulator: Emulator, make_config: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = make_config(tls_emulator.url, FEED, cybertrace="verify_tls: false\n")
    async with CyberTrace(loaded.cybertrace) as client:
        assert await client.supplier("FalsePositive") is not None
    captured = capsys.readouterr()
    assert "cybertrace.tls_unverified" in captured.out + captured.err


async def test_client_certificate(certificates: Path, make_config: ConfigFactory) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(certificates / "ca.pem")
    emulator = Emulator(user=USER, password=PASSWORD)
    await emulator.start(tls=context)
    try:
        tls = f"verify_tls: {certificates / 'ca.pem'}\nretry: {{attempts: 1}}\n"
        without = make_config(emulator.url, FEED, cybertrace=tls)
        async with CyberTrace(without.cybertrace) as client:
            with pytest.raises(CyberTraceError):
                await client.supplier("FalsePositive")
        cert = (
            f"client_cert: {certificates / 'client.pem'}\n"
            f"client_key: {certificates / 'client.key'}\n"
        )
        with_cert = make_config(emulator.url, FEED, cybertrace=tls + cert)
        async with CyberTrace(with_cert.cybertrace) as client:
            assert await client.supplier("FalsePositive") is not None
        # The certificate went into a context of its own: one shared with every feed
        # of that CA file would show it to their servers (and let this one in).
        async with CyberTrace(without.cybertrace) as client:
            with pytest.raises(CyberTraceError):
                await client.supplier("FalsePositive")
        # Verification off for this endpoint still shows the certificate.
        off = "verify_tls: false\nretry: {attempts: 1}\n"
        unverified = make_config(emulator.url, FEED, cybertrace=off + cert)
        async with CyberTrace(unverified.cybertrace) as client:
            assert await client.supplier("FalsePositive") is not None
    finally:
        await emulator.stop()


async def test_tls_contexts_are_shared_until_the_ca_file_changes(
    certificates: Path, tmp_path: Path
) -> None:
    """Loading a CA store costs milliseconds of CPU: a cycle of many feeds must not
    pay it per fetch, yet a rotated CA bundle is used from the next fetch on."""
    assert await ssl_context(False) is False
    bundle = tmp_path / "bundle.pem"
    shutil.copy(certificates / "ca.pem", bundle)
    first = await ssl_context(str(bundle))
    assert await ssl_context(str(bundle)) is first
    bundle.write_text(bundle.read_text() + "\n")  # rotated: another size and time
    rotated = await ssl_context(str(bundle))
    assert rotated is not first
    assert isinstance(rotated, ssl.SSLContext)
    assert rotated.get_ca_certs()[0]["subject"] == ((("commonName", "Test CA"),),)


async def test_the_system_store_is_aiohttps_own_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp builds a verified context of the system store at its import: building
    another cost 27 ms of CPU a process, a tenth of a steady `feedsync sync`'s start."""

    def refused(*_args: object, **_kwargs: object) -> ssl.SSLContext:
        raise AssertionError("a CA store loaded again")

    monkeypatch.setattr(ssl, "create_default_context", refused)
    assert await ssl_context(True) is True  # aiohttp: its verified default context
