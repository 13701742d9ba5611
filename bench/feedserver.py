"""A feed server for benchmarks, as a process of its own: ``feedserver.py DIR [--tls CERT KEY]``.

Serves the files of DIR as a production feed server does: ``ETag`` (the
file's mtime and size, as nginx makes it) and ``Last-Modified``, a 304 to a
conditional GET whose ``If-None-Match`` names the current ETag (or, without
``If-None-Match``, whose ``If-Modified-Since`` is not older than the file),
``Content-Length`` and HTTP/1.1 keep-alive. With ``--tls`` it serves HTTPS
with that certificate. Prints ``feedserver listening on URL`` once it
accepts connections. ``GET /_stats`` answers what it served since the last
``DELETE /_stats``: ``{"200": N, "304": N, "bytes": N, "most": N}``, "most"
the most feed requests it was answering at once.

It uses only the standard library (not the client's aiohttp), sends bodies
with ``sendfile`` over plain HTTP, and never reads a file into memory.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1 << 20


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"200": 0, "304": 0, "bytes": 0, "most": 0}
        self.busy = 0

    def enter(self) -> None:
        with self.lock:
            self.busy += 1
            self.counts["most"] = max(self.counts["most"], self.busy)

    def leave(self) -> None:
        with self.lock:
            self.busy -= 1

    def add(self, status: int, size: int = 0) -> None:
        with self.lock:
            self.counts[str(status)] = self.counts.get(str(status), 0) + 1
            self.counts["bytes"] += size

    def take(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def clear(self) -> None:
        with self.lock:
            self.counts = {"200": 0, "304": 0, "bytes": 0, "most": self.busy}


def etag_of(stat: os.stat_result) -> str:
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def not_modified(headers: dict[str, str], stat: os.stat_result) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; If-Modified-Since
    only without it."""
    tags = headers.get("if-none-match")
    if tags is not None:
        wanted = {tag.strip().removeprefix("W/") for tag in tags.split(",")}
        return "*" in wanted or etag_of(stat) in wanted
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
    return int(stat.st_mtime) <= when


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "feedserver/1"
    root: Path
    stats: Stats

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._small(HTTPStatus.OK, json.dumps(self.stats.take()).encode())
            return
        name = self.path.split("?", 1)[0].lstrip("/")
        path = self.root / name
        if "/" in name or name.startswith(".") or not path.is_file():
            self._small(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        self.stats.enter()
        try:
            self._file(path)
        finally:
            self.stats.leave()

    def _file(self, path: Path) -> None:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            headers = {key.lower(): value for key, value in self.headers.items()}
            validators = {
                "ETag": etag_of(stat),
                "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
            }
            # Counted before the first byte of the answer: whoever has the answer
            # finds it in the stats.
            if not_modified(headers, stat):
                self.stats.add(304)
                self.send_response(HTTPStatus.NOT_MODIFIED)
                for key, value in validators.items():
                    self.send_header(key, value)
                self.end_headers()
                return
            self.stats.add(200, stat.st_size)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(stat.st_size))
            for key, value in validators.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.flush()
            if isinstance(self.connection, ssl.SSLSocket):
                while chunk := handle.read(CHUNK):
                    self.wfile.write(chunk)
            else:
                self.connection.sendfile(handle, 0, stat.st_size)

    def do_DELETE(self) -> None:
        if self.path != "/_stats":
            self._small(HTTPStatus.METHOD_NOT_ALLOWED, b"no\n")
            return
        self.stats.clear()
        self._small(HTTPStatus.OK, b"{}")

    def _small(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    handler = type("BoundHandler", (Handler,), {"root": args.root.resolve(), "stats": Stats()})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    scheme = "http"
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        # The handshake happens on the first read, in the connection's thread.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        scheme = "https"
    print(f"feedserver listening on {scheme}://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
