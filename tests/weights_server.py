"""A real HTTP server on 127.0.0.1 standing in for the checkpoints' download sources.

`weights_server` serves byte strings by path with Range support, counts the requests (and
the Range header of each), and can misbehave per path: drop the connection half-way through
the first N bodies, or ignore Range requests.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest


@dataclass
class Served:
    body: bytes
    drop_first: int = 0  # this many requests die half-way through the body
    ignore_range: bool = False
    content_length: int | None = None  # a lying Content-Length (truncated body) when set
    requests: list = field(default_factory=list)  # the Range header of each request ("" when none)


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, Served]] = {}

    def log_message(self, *args) -> None:  # keep pytest output clean
        return None

    def do_GET(self) -> None:
        item = self.files.get(self.path)
        if item is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range") or ""
        item.requests.append(rng)
        body, start = item.body, 0
        m = re.fullmatch(r"bytes=(\d+)-", rng)
        if m and not item.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        length = item.content_length if item.content_length is not None else len(rest)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if len(item.requests) <= item.drop_first:
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest[:length])


@pytest.fixture
def weights_server():
    """(base URL, {path: Served}) of a threaded HTTP server on 127.0.0.1, shut down afterwards."""
    files: ClassVar[dict[str, Served]] = {}
    handler = type("Handler", (_Handler,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
