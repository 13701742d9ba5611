"""``feedsync emulator``: the emulator served from the command line until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from feedsync.emulator import readings as readings_cli
from feedsync.emulator.readings import Readings
from feedsync.emulator.server import Emulator

# A long-running emulator would otherwise keep every request body it ever received.
SERVE_LOG_LIMIT = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:9443", metavar="HOST:PORT")
    parser.add_argument("--user", default="feedsync")
    parser.add_argument("--password", default="feedsync")
    parser.add_argument(
        "--api-versions", default="1.0,1.1,1.2,1.3", help="comma-separated, e.g. 1.1,1.2"
    )
    parser.add_argument(
        "--tenants",
        default="",
        metavar="NAME,...",
        help="multitenancy mode with these tenants besides General (default: off)",
    )
    parser.add_argument(
        "--sink",
        action="store_true",
        help="check indicators but keep none (for benchmarks with millions of them)",
    )
    readings_cli.add_arguments(parser)


async def serve_from(args: argparse.Namespace) -> None:
    """``serve`` with the options ``add_arguments`` parsed."""
    await serve(
        args.listen,
        user=args.user,
        password=args.password,
        api_versions=_names(args.api_versions),
        tenants=_names(args.tenants),
        sink=args.sink,
        readings=readings_cli.from_args(args),
    )


def _names(listed: str) -> list[str]:
    return [name.strip() for name in listed.split(",") if name.strip()]


async def serve(
    listen: str,
    *,
    user: str,
    password: str,
    api_versions: Sequence[str],
    tenants: Sequence[str] = (),
    sink: bool = False,
    readings: Readings | None = None,
) -> None:
    """Run an emulator on ``listen`` (HOST:PORT) until cancelled, SIGINT or SIGTERM."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    chosen = readings or Readings()
    emulator = Emulator(
        user=user,
        password=password,
        api_versions=api_versions,
        tenants=tenants,
        log_limit=SERVE_LOG_LIMIT,
        sink=sink,
        **{name: getattr(chosen, name) for name in Readings.__dataclass_fields__},
    )
    url = await emulator.start(host.strip("[]") or "127.0.0.1", int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every loop or thread can take signal handlers; cancellation still works there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        # Printed once signals are handled: whoever reads it may signal at once.
        print(f"emulator listening on {url} (API {','.join(api_versions)})", flush=True)
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await emulator.stop()
