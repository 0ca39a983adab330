"""``FakeLangSmith``: the fake's lifecycle (a daemon thread serving 127.0.0.1) and its answers."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith.faults import Faults
from backfill.sandbox.fake_langsmith.listing import Catalog, Filters, parse_filters, session_json
from backfill.sandbox.fake_langsmith.plumbing import INFO, Answer, Handler, Reset, Server, canonical, int_param


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


class FakeLangSmith(Faults, Catalog):
    """The fake server; ``start()`` it (or use ``with``) and point a Client at ``url``.

    Runs added with ``add_runs`` (listing.py) are also listed by project and creation time.
    """

    def __init__(
        self,
        api_key: str = "fake-key",
        *,
        feedback: Callable[[str], list[dict[str, Any]]] = synthetic.feedback_for_run,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        Faults.__init__(self)
        Catalog.__init__(self)
        self.api_key = api_key
        self.latency_s = latency_s
        self.empty_all = False
        self.requests: list[RequestLog] = []
        self._feedback = feedback
        self._host, self._port = host, port
        self._socks: set[socket.socket] = set()
        self._reset_socks: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # lifecycle

    def start(self) -> FakeLangSmith:
        """Bind and serve in a daemon thread; ``url`` is set once this returns."""
        server = Server((self._host, self._port), Handler)
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
        return self._records_of(canonical(run_id))

    def listed(self, **params: str | list[str]) -> list[dict[str, Any]]:
        """The whole result set (all pages) GET /feedback with ``params`` answers, without
        the HTTP faults (``listing_misses`` does apply): ``listed(session=sid, level="run")``."""
        query = {k: list(v) if isinstance(v, list) else [str(v)] for k, v in params.items()}
        return self._matching(parse_filters(query))

    def feedback_requests(self) -> list[RequestLog]:
        """The GET /feedback requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == "/feedback"]

    # serving

    def reset_pending(self, sock: Any) -> bool:
        with self._lock:
            reset = sock in self._reset_socks
            self._reset_socks.discard(sock)
        return reset

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._socks.add if add else self._socks.discard)(sock)

    def set_feedback(self, run_id: str, records: list[dict[str, Any]]) -> None:
        super().set_feedback(run_id, records)
        self._invalidate()  # a cataloged run's listing serves the override too

    def _generated(self, run_id: str) -> list[dict[str, Any]]:
        return self._feedback(run_id)

    def _records_of(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            override = self._overrides.get(run_id)
        if override is not None:
            return override
        placed = self._placed_of(run_id)
        return placed if placed is not None else self._feedback(run_id)

    def handle(self, h: Handler) -> None:
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
            elif (path == "/sessions" or path.startswith("/sessions/")) and h.command == "GET":
                body = self._sessions_answer(path, query, headers)
            elif path in ("/feedback", "/info", "/sessions"):
                raise Answer(405, "Method Not Allowed")
            else:
                raise Answer(404, "Not Found")
            status = 200
        except Answer as answer:
            status, body, extra = answer.status, answer.body, answer.headers
        except Reset:
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

    def _matching(self, filters: Filters) -> list[dict[str, Any]]:
        """The answer's whole result set: the named runs' records in the order asked, or the
        catalog's listing newest first (listing.py); both filtered as the query says."""
        if filters.listing:
            with self._lock:
                overridden = set(self._overrides)
            entries = self._list(filters, self._records_of, overridden)
            with self._lock:
                poisoned = any(r.get("run_id") in self._poisoned for _, r in entries)
            if poisoned:  # a listing that would carry a poisoned run's record fails like a request naming it
                raise Answer(500, "Internal Server Error")
            return self._missing([r for _, r in entries], filters)
        records: list[dict[str, Any]] = []
        for run_id in filters.runs:
            if filters.sessions:
                info = self.cataloged(run_id)
                if info is None or info.session_id not in filters.sessions:
                    continue
            records.extend(r for r in self._records_of(run_id) if filters.keeps(r))
        return records

    def _sessions_answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        """GET /sessions[?name=...] (a list, paged) or GET /sessions/{id} (one, or 404), as
        ``Client.read_project`` and ``list_projects`` call them. No fault applies here."""
        if headers.get("x-api-key") != self.api_key:
            raise Answer(401, "Invalid token")
        known = self.sessions()
        if path != "/sessions":
            try:
                session_id = canonical(path[len("/sessions/") :])
            except ValueError:
                raise Answer(422, [{"loc": ["path", "session_id"], "msg": "value is not a valid uuid"}]) from None
            if session_id not in known:
                raise Answer(404, "Not Found")
            return json.dumps(session_json(session_id, known[session_id]))
        limit = int_param(query, "limit", 100, 1, 100)
        offset = int_param(query, "offset", 0, 0, None)
        names, contains = set(query.get("name", [])), query.get("name_contains", [""])[-1]
        try:
            ids = {canonical(i) for i in query.get("id", [])}
        except ValueError:
            raise Answer(422, [{"loc": ["query", "id"], "msg": "value is not a valid uuid"}]) from None
        found = [
            session_json(sid, name)
            for sid, name in sorted(known.items(), key=lambda kv: (kv[1] or "", kv[0]))
            if (not names or name in names) and (not ids or sid in ids) and contains in (name or "")
        ]
        return json.dumps(found[offset : offset + limit])

    def _missing(self, records: list[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
        """``records`` less what the ``listing_misses`` fault drops from a project listing."""
        with self._lock:
            every = self._listing_misses
        if every is None or not filters.sessions:
            return records
        return [r for i, r in enumerate(records, 1) if i % every]

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

    def _feedback_answer(
        self, h: Handler, query: dict[str, list[str]], headers: dict[str, str], received: float
    ) -> str:
        stall, reset = self._take()
        if stall > 0:
            self._stopping.wait(stall)
        if reset:
            raise Reset
        failure = self._infrastructure(query, received) or self._next_failure()
        if failure is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            try:
                phrase = HTTPStatus(failure.status).phrase
            except ValueError:
                phrase = "Error"
            raise Answer(failure.status, phrase, extra, failure.body)
        if headers.get("x-api-key") != self.api_key:
            raise Answer(401, "Invalid token")
        filters = parse_filters(query)
        runs = filters.runs
        limit = int_param(query, "limit", 100, 1, 100)
        offset = int_param(query, "offset", 0, 0, None)
        with self._lock:
            poisoned = any(r in self._poisoned for r in runs)
            stray, duplicate = list(self._stray), self._duplicate
            if self._ignore_offset:
                offset = 0
        if poisoned:
            raise Answer(500, "Internal Server Error")
        records = [] if self.empty_all else self._matching(filters)
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
