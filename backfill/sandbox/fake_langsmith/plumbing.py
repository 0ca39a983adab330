"""The fake's HTTP plumbing: a threading server whose handler hands every request to its owner,
and the socket trick that turns a close into a connection reset."""

from __future__ import annotations

import json
import socket
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

INFO = {
    "version": "0.0-fake",
    "license_expiration_time": None,
    "batch_ingest_config": {
        "use_multipart_endpoint": False,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20_971_520,
    },
    "instance_flags": {},
}


class Answer(Exception):
    """Raised inside the handler to answer with an error status."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None, body: str | None = None):
        super().__init__(status)
        self.status, self.headers = status, headers or {}
        self.body = body if body is not None else json.dumps({"detail": detail})


class Reset(Exception):
    """Raised inside the handler to reset the connection instead of answering."""


class Owner(Protocol):
    """What the plumbing needs of the fake that owns it (``server.FakeLangSmith``)."""

    def track(self, sock: socket.socket, *, add: bool) -> None: ...

    def handle(self, h: Handler) -> None: ...

    def reset_pending(self, sock: Any) -> bool:
        """Whether this connection is to be reset (closed without FIN); forgets it."""
        ...


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients must not see connection refused
    owner: Owner

    def shutdown_request(self, request: Any) -> None:
        # A reset connection must be closed without the FIN that shutdown() would send,
        # so that SO_LINGER=0 turns the close into a RST.
        if self.owner.reset_pending(request):
            self.close_request(request)
        else:
            super().shutdown_request(request)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled session expects
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer
    disable_nagle_algorithm = True
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.owner.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo own stderr

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    def _not_allowed(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drain, so the kept-alive connection stays in sync
        self.server.owner.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def send_body(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def canonical(run_id: str) -> str:
    return str(uuid.UUID(run_id))


def int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise Answer(422, [{"loc": ["query", name], "msg": "value is not a valid integer"}]) from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise Answer(422, [{"loc": ["query", name], "msg": f"ensure this value is {bound}"}])
    return value
