"""A fake LangSmith API on 127.0.0.1: GET /feedback and GET /info, with fault injection.

It speaks real HTTP so that the real ``langsmith.Client`` (paths, query parameters,
``x-api-key``, offset paging) is exercised, not a mock of it.

Order of checks for GET /feedback (infrastructure faults come before the application):
latency, stall, reset, URL too long (414, ``max_ids``), windows (``outage``,
``rate_limit_window``), fail_next, auth (401), validation (422), poison (500), empty_all,
data (stray/duplicate, ``ignore_offset``), truncate.

Run standalone: ``python -m backfill.fake_langsmith --port 8123 --api-key K``; the fault
modes of real incidents are options too (``--outage 25 --fault-after 30``: after the first
30 requests, 25 s of 500s; ``--rate-limit-window 20``, ``--ignore-offset``, ``--max-ids 50``).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import synthetic

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


@dataclass(frozen=True)
class RequestLog:
    """One request as received, and the status answered (None: connection reset).

    ``at`` is ``time.monotonic()`` when the request was received, before any injected
    latency or stall: the list is in answer order, sort by ``at`` for arrival order.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None
    body: str | None


@dataclass
class _Window:
    """Every /feedback request answers ``status`` for ``seconds`` (or ``requests`` requests),
    from the request that arrives after the first ``after`` ones."""

    status: int
    seconds: float | None
    requests: int | None
    after: int
    retry_after: str | None
    started_at: float | None = None
    served: int = 0

    def strikes(self, seen: int, now: float) -> bool:
        if self.started_at is None:
            if seen <= self.after:
                return False
            self.started_at = now
        if self.requests is not None:
            if self.served >= self.requests:
                return False
            self.served += 1
            return True
        return self.seconds is not None and now < self.started_at + self.seconds


class _Answer(Exception):
    """Raised inside the handler to answer with an error status."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None, body: str | None = None):
        super().__init__(status)
        self.status, self.headers = status, headers or {}
        self.body = body if body is not None else json.dumps({"detail": detail})


class _Reset(Exception):
    """Raised inside the handler to reset the connection instead of answering."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients must not see connection refused
    owner: FakeLangSmith

    def shutdown_request(self, request: Any) -> None:
        # A reset connection must be closed without the FIN that shutdown() would send,
        # so that SO_LINGER=0 turns the close into a RST.
        with self.owner._lock:
            reset = request in self.owner._reset_socks
            self.owner._reset_socks.discard(request)
        if reset:
            self.close_request(request)
        else:
            super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled session expects
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo own stderr

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def _not_allowed(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drain, so the kept-alive connection stays in sync
        self.server.owner._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def send_body(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _canonical(run_id: str) -> str:
    return str(uuid.UUID(run_id))


def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int | None) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise _Answer(422, [{"loc": ["query", name], "msg": "value is not a valid integer"}]) from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise _Answer(422, [{"loc": ["query", name], "msg": f"ensure this value is {bound}"}])
    return value


class FakeLangSmith:
    """The fake server; ``start()`` it (or use ``with``) and point a Client at ``url``."""

    def __init__(
        self,
        api_key: str = "fake-key",
        *,
        feedback: Callable[[str], list[dict[str, Any]]] = synthetic.feedback_for_run,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.empty_all = False
        self.requests: list[RequestLog] = []
        self._feedback = feedback
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._overrides: dict[str, list[dict[str, Any]]] = {}
        self._poisoned: set[str] = set()
        self._failures: deque[_Failure] = deque()
        self._stalls: deque[float] = deque()
        self._truncate = 0
        self._reset = 0
        self._stray: list[dict[str, Any]] = []
        self._duplicate = False
        self._ignore_offset = False
        self._max_ids: tuple[int, int] | None = None
        self._windows: list[_Window] = []
        self._seen = 0  # /feedback requests received
        self._socks: set[socket.socket] = set()
        self._reset_socks: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # lifecycle

    def start(self) -> FakeLangSmith:
        """Bind and serve in a daemon thread; ``url`` is set once this returns."""
        server = _Server((self._host, self._port), _Handler)
        server.owner = self
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._stopping.clear()
        # A short poll interval makes stop() (server.shutdown) return quickly.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-langsmith", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled answers, drop kept-alive connections, close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes handler threads blocked on keep-alive reads
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLangSmith:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def records_of(self, run_id: str) -> list[dict[str, Any]]:
        """The records GET /feedback serves for ``run_id`` when no fault is injected."""
        return self._records_of(_canonical(run_id))

    def feedback_requests(self) -> list[RequestLog]:
        """The GET /feedback requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == "/feedback"]

    # data and faults

    def set_feedback(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """Serve exactly ``records`` for ``run_id`` instead of the generated ones."""
        with self._lock:
            self._overrides[_canonical(run_id)] = list(records)

    def fail_next(
        self, status: int, *, times: int = 1, retry_after: str | None = None, body: str | None = None
    ) -> None:
        """The next ``times`` /feedback requests answer ``status`` (with Retry-After if given)."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, body) for _ in range(times))

    def poison(self, run_id: str) -> None:
        """Any /feedback request asking for ``run_id`` answers 500."""
        with self._lock:
            self._poisoned.add(_canonical(run_id))

    def truncate_next(self, times: int = 1) -> None:
        """The next ``times`` /feedback answers are 200 with half of the JSON body."""
        with self._lock:
            self._truncate += times

    def reset_next(self, times: int = 1) -> None:
        """The next ``times`` /feedback requests get their connection reset, no answer."""
        with self._lock:
            self._reset += times

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` /feedback requests wait ``seconds`` before being handled."""
        with self._lock:
            self._stalls.extend([seconds] * times)

    def stray_records(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (of runs not asked) to every answer's first page."""
        with self._lock:
            self._stray = list(records)

    def duplicate_across_pages(self, on: bool = True) -> None:
        """Repeat the last record of page k as the first of page k+1 (for every k)."""
        with self._lock:
            self._duplicate = on

    def outage(
        self,
        seconds: float | None = None,
        *,
        requests: int | None = None,
        status: int = 500,
        after: int = 0,
    ) -> None:
        """An incident: every /feedback request answers ``status`` for ``seconds`` (or for
        ``requests`` requests), starting with the request after the next ``after`` ones."""
        if (seconds is None) == (requests is None):
            raise ValueError("give seconds or requests")
        with self._lock:
            self._windows.append(_Window(status, seconds, requests, self._seen + after, None))

    def rate_limit_window(self, seconds: float, *, retry_after: str | None = None, after: int = 0) -> None:
        """A load balancer's rate-limit window: 429 (without Retry-After unless given) to every
        /feedback request for ``seconds``, from the request after the next ``after`` ones."""
        with self._lock:
            self._windows.append(_Window(429, seconds, None, self._seen + after, retry_after))

    def end_windows(self) -> None:
        """End every outage and rate-limit window now (the incident is over)."""
        with self._lock:
            self._windows.clear()

    def window_started_at(self, index: int = 0) -> float | None:
        """When (``time.monotonic()``) the ``index``-th outage or rate-limit window began."""
        with self._lock:
            return self._windows[index].started_at

    def ignore_offset(self, on: bool = True) -> None:
        """Serve the first page whatever ``offset`` says (a proxy that drops the parameter)."""
        with self._lock:
            self._ignore_offset = on

    def max_ids(self, n: int | None, status: int = 414) -> None:
        """Answer ``status`` (414 URI Too Long, or 431) to a request naming more than ``n`` runs."""
        with self._lock:
            self._max_ids = None if n is None else (n, status)

    # serving

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._socks.add if add else self._socks.discard)(sock)

    def _records_of(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            override = self._overrides.get(run_id)
        return override if override is not None else self._feedback(run_id)

    def _handle(self, h: _Handler) -> None:
        received = time.monotonic()
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/") or "/"
        if path.startswith("/api/v1/"):
            path = path[len("/api/v1") :]  # tolerate an endpoint given with the API prefix
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in h.headers.items()}
        if self.latency_s > 0:
            self._stopping.wait(self.latency_s)
        extra: dict[str, str] = {}
        try:
            if path == "/feedback" and h.command == "GET":
                body = self._feedback_answer(h, query, headers, received)
            elif path == "/info" and h.command == "GET":
                body = json.dumps(INFO)
            elif path in ("/feedback", "/info"):
                raise _Answer(405, "Method Not Allowed")
            else:
                raise _Answer(404, "Not Found")
            status = 200
        except _Answer as answer:
            status, body, extra = answer.status, answer.body, answer.headers
        except _Reset:
            self._log(h.command, path, query, headers, None, received)
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with self._lock:
                self._reset_socks.add(h.connection)
            h.close_connection = True
            return
        # Log before answering: a caller that checks ``requests`` right after its call returns sees it.
        self._log(h.command, path, query, headers, status, received)
        try:
            h.send_body(status, body.encode(), extra)
        except OSError:
            h.close_connection = True  # the client went away (e.g. its read timeout fired)

    def _log(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        status: int | None,
        at: float,
    ) -> None:
        with self._lock:
            self.requests.append(RequestLog(method, path, query, headers, status, at))

    def _take(self) -> tuple[float, bool]:
        with self._lock:
            stall = self._stalls.popleft() if self._stalls else 0.0
            reset = self._reset > 0
            self._reset -= reset
        return stall, reset

    def _next_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _infrastructure(self, query: dict[str, list[str]], now: float) -> _Failure | None:
        """A 414 for too many ids, or the answer of an outage or rate-limit window at ``now``
        (the request's arrival, as logged: a window starts at its first request's ``at``)."""
        with self._lock:
            self._seen += 1
            if self._max_ids is not None and len(query.get("run", [])) > self._max_ids[0]:
                return _Failure(self._max_ids[1], None, None)
            for window in self._windows:
                if window.strikes(self._seen, now):
                    return _Failure(window.status, window.retry_after, None)
        return None

    def _feedback_answer(
        self, h: _Handler, query: dict[str, list[str]], headers: dict[str, str], received: float
    ) -> str:
        stall, reset = self._take()
        if stall > 0:
            self._stopping.wait(stall)
        if reset:
            raise _Reset
        failure = self._infrastructure(query, received) or self._next_failure()
        if failure is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            try:
                phrase = HTTPStatus(failure.status).phrase
            except ValueError:
                phrase = "Error"
            raise _Answer(failure.status, phrase, extra, failure.body)
        if headers.get("x-api-key") != self.api_key:
            raise _Answer(401, "Invalid token")
        try:
            runs = [_canonical(r) for r in query.get("run", [])]
        except ValueError:
            raise _Answer(422, [{"loc": ["query", "run"], "msg": "value is not a valid uuid"}]) from None
        limit = _int_param(query, "limit", 100, 1, 100)
        offset = _int_param(query, "offset", 0, 0, None)
        with self._lock:
            poisoned = any(r in self._poisoned for r in runs)
            stray, duplicate = list(self._stray), self._duplicate
            if self._ignore_offset:
                offset = 0
        if poisoned:
            raise _Answer(500, "Internal Server Error")
        records: list[dict[str, Any]] = []
        if not self.empty_all:
            keys, sources = set(query.get("key", [])), set(query.get("source", []))
            for run_id in runs:
                records.extend(
                    r
                    for r in self._records_of(run_id)
                    if (not keys or r.get("key") in keys)
                    and (not sources or (r.get("feedback_source") or {}).get("type") in sources)
                )
        # Duplicating: page k starts k records early, so each page repeats the previous one's
        # last record and nothing is lost (the pages simply run longer).
        start = offset - offset // limit if duplicate else offset
        page = records[start : start + limit]
        if offset == 0 and not self.empty_all:
            page = page + stray
        body = json.dumps(page, default=str)
        with self._lock:
            truncate = self._truncate > 0
            self._truncate -= truncate
        if truncate:
            body = body[: max(1, len(body) // 2)]  # "[]" becomes "[": still invalid JSON
        return body


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m backfill.fake_langsmith", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--api-key", default="fake-key")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--outage", type=float, metavar="S", help="an incident: S seconds of --outage-status answers")
    parser.add_argument("--outage-requests", type=int, metavar="N", help="an incident of N requests instead")
    parser.add_argument("--outage-status", type=int, default=500, help="the incident's status (500, 502, 503)")
    parser.add_argument("--rate-limit-window", type=float, metavar="S", help="S seconds of 429 without Retry-After")
    parser.add_argument("--retry-after", metavar="V", help="send this Retry-After with the window's 429s")
    parser.add_argument(
        "--fault-after", type=int, default=0, metavar="N", help="the windows start after the first N requests"
    )
    parser.add_argument("--ignore-offset", action="store_true", help="serve the first page whatever offset says")
    parser.add_argument("--max-ids", type=int, metavar="N", help="414 to requests naming more than N runs")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    fake = FakeLangSmith(args.api_key, latency_s=args.latency_ms / 1000, host=args.host, port=args.port)
    if args.outage is not None or args.outage_requests is not None:
        fake.outage(args.outage, requests=args.outage_requests, status=args.outage_status, after=args.fault_after)
    if args.rate_limit_window is not None:
        fake.rate_limit_window(args.rate_limit_window, retry_after=args.retry_after, after=args.fault_after)
    if args.ignore_offset:
        fake.ignore_offset()
    if args.max_ids is not None:
        fake.max_ids(args.max_ids)
    fake.start()
    print(f"fake LangSmith listening on {fake.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
