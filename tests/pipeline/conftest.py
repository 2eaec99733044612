"""Fixtures of the trainer tests (``test_data``, ``test_train``, ``test_evaluation``, ``test_ddp``), and a loopback
HTTP server with Range support for the download tests (``datasets/``, ``test_weights``)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from tiny_run import make_project, tiny

from pipeline.config import Params


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Params:
    """The tiny project (built once per test session) with the tiny training settings."""
    return tiny(make_project(tmp_path_factory.mktemp("tiny-project")))


@pytest.fixture
def one_thread():
    """Train with one thread: on a shared 2-core machine a second OpenMP thread waits on every other process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ArchiveServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 and records every request as (path, Range header).

    ``drop_once``: names whose first GET is cut after half the body (the connection closes).
    ``ignore_range``: answer Range requests with the whole file (HTTP 200), as some servers do.
    ``range_start``: answer Range requests with a 206 from this byte instead of the one asked for (a broken proxy).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: set[str] = set()
        self.ignore_range = False
        self.range_start: int | None = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class RangeHandler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` (206 / 416) over ``ArchiveServer.files``."""

    def do_GET(self) -> None:
        server: ArchiveServer = self.server.owner  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        requested = self.headers.get("Range")
        server.requests.append((self.path, requested))
        data = server.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match and not server.ignore_range:
            start = int(match.group(1)) if server.range_start is None else server.range_start
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in server.drop_once:
            server.drop_once.discard(name)
            body = body[: len(body) // 2]  # then the handler returns and HTTP/1.0 closes the connection
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    """A loopback server, stopped and closed at the end of the test."""
    archive_server = ArchiveServer()
    archive_server.thread.start()
    try:
        yield archive_server
    finally:
        archive_server.httpd.shutdown()
        archive_server.httpd.server_close()
        archive_server.thread.join(timeout=5)
