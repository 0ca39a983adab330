"""The pre-flight: what `backfill check` reports, and what `backfill run` asks before its first write.

As gh-ost and pg_repack check before they act, `run` stops before it marks any row when one of
these is wrong; `check` prints each as an OK/WARN/FAIL line and goes on:

* **database**: reachable, and as whom (``server``);
* **schema**: our tables at the package's head revision (``schema``);
* **privileges**: what each command needs, read from the catalog, never by trying (``privileges``);
* **key, endpoint, workspace**: GET /feedback naming the window's newest runs whose feedback_stats
  promise records (``probe_api``), through the caller's transport (`run`'s waits out a 429 or an
  outage, saying so). A refused key is ``ApiAuthError``; an address that is not the API (404/405,
  a redirect, a page that is not JSON: ``langsmith.classify.not_the_api``) is ``NotLangSmith``, and
  so is one that answers no request with a JSON array; the workspace is wrong when most of those
  runs get no record (``domain.workspace``).

Database reads run in transactions made READ ONLY (query ``check_read_only``) and rolled back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backfill import logs
from backfill.archive import gateway as db
from backfill.archive import revisions
from backfill.config import Window
from backfill.domain.checks import FAIL, FAIL_WITHOUT, NEEDS, OK, WARN, CheckReport
from backfill.domain.records import canonical_run_id
from backfill.domain.rows import Answer, Tally
from backfill.domain.workspace import PROBE_RUNS, wrong_workspace
from backfill.errors import MissingPrivileges, NotMigrated, WrongWorkspace
from backfill.langsmith.by_run import fetch, fetch_isolating
from backfill.langsmith.transport import BatchFailed, Transport, UrlTooLong

__all__ = ["ApiProbe", "Preflight", "privileges", "probe_api", "probe_runs", "read_only", "schema", "server"]


def read_only(gw: db.Gateway, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One named query in its own read-only transaction."""
    gw.execute("check_read_only")
    try:
        return gw.execute(name, params)
    finally:
        gw.rollback()


def server(gw: db.Gateway, report: CheckReport) -> dict[str, Any]:
    """The **database** line (reachable, as whom); returns what the server said (``check_server``)."""
    row = read_only(gw, "check_server")[0]
    info = gw.conn.info
    report.add(
        "database",
        OK,
        f"reachable: PostgreSQL {row['server_version'].split()[0]}, role {row['role']},"
        f" database {row['dbname']} on {info.host}:{info.port}",
        role=row["role"],
        server_version=row["server_version"],
    )
    return row


def schema(gw: db.Gateway, report: CheckReport, server_row: dict[str, Any]) -> bool:
    """The **schema** line: our tables at the package's head; returns whether our tables exist."""
    head = revisions.head()
    ours = [r["version_num"] for r in read_only(gw, "check_our_version")] if server_row["ours_readable"] else []
    migrated = bool(read_only(gw, "check_schema")[0]["migrated"])
    if migrated and server_row["ours_table"] and not server_row["ours_readable"]:
        report.add(
            "schema",
            WARN,
            f"our tables exist; role {server_row['role']} may not read feedback_backfill_alembic_version to confirm"
            f" the revision is {head} (run the check as the owner to confirm)",
        )
    elif ours == [head] and migrated:
        report.add("schema", OK, f"ours at {head} (head), in feedback_backfill_alembic_version", revision=head)
    elif not ours or not migrated:
        report.add(
            "schema",
            FAIL,
            "our tables are missing: run `backfill db upgrade` (straight to the server, not through a pooler)",
            revision=ours[0] if ours else None,
        )
    else:
        report.add(
            "schema", FAIL, f"ours at {', '.join(ours)}, the package's head is {head}: run `backfill db upgrade`"
        )
    return migrated


def privileges(report: CheckReport, got: dict[str, Any], commands: Iterable[str] = tuple(NEEDS)) -> None:
    """A **can <command>** line per command: what its role lacks (``check_privileges``' row ``got``)."""
    for command in commands:
        missing = [what for column, what in NEEDS[command] if not got[column]]
        if not missing:
            report.add(f"can {command}", OK, f"role {got['role']} has what `backfill {command}` needs")
            continue
        level = FAIL if command in FAIL_WITHOUT else WARN
        note = "" if level == FAIL else " (the owner's command by design: sql/grants.sql grants the runner less)"
        report.add(
            f"can {command}",
            level,
            f"role {got['role']} lacks {', '.join(missing)} for `backfill {command}`{note}",
            missing=missing,
            role=got["role"],
        )


def probe_runs(gw: db.Gateway, window: Window) -> list[str]:
    """The window's newest ``PROBE_RUNS`` runs whose feedback_stats count records."""
    rows = read_only(
        gw,
        "workspace_probe_runs",
        {"since": window.since, "until": window.until, "projects": list(window.projects) or None, "n": PROBE_RUNS},
    )
    return [r["run_id"] for r in rows if canonical_run_id(r["run_id"]) is not None]


@dataclass
class ApiProbe:
    """What GET /feedback answered for the probe's runs."""

    probed: list[str]  # empty: no run of the window promises records (a random id was asked)
    answered: int = 0  # probed runs the API answered (a run it refused is not counted)
    silent: int = 0  # ... with no record
    records: int = 0
    sizes: list[int] = field(default_factory=list)  # JSON bytes of each answered run's records
    refused: str | None = None  # why a probed run was refused, if one was

    @property
    def wrong_workspace(self) -> bool:
        """Most answered runs got nothing: the key is another workspace's."""
        return self.answered > 0 and wrong_workspace(self.silent, self.answered)


def probe_api(transport: Transport, probe: list[str], tally: Tally) -> ApiProbe:
    """Ask for the records of ``probe`` (or of a random id, which names no run's data) through
    ``transport``, its retries, waits and isolation as in a run.

    Raises what stops everything: ``ApiAuthError`` (the key), ``NotLangSmith`` (the endpoint;
    also when no request is answered with a JSON array, a request naming no run's data
    included), ``ApiUnavailable`` (an outage longer than the transport waits). A run the API
    refuses is left out of the verdict (a run's own refusal, isolated as in a run).
    """
    before = transport.last_success
    asked = probe or [str(uuid.uuid4())]
    try:
        got: dict[str, Answer] = dict(fetch(transport, asked, tally))
    except (BatchFailed, UrlTooLong) as exc:
        if transport.last_success <= before and not getattr(exc, "needs_proof", False):
            _refused_for_nobody(transport, probe, exc, tally)
        got = fetch_isolating(transport, asked, tally)  # the probe's runs refused: isolated, as in a run
    refusals = [v.removeprefix("API error: ") for v in got.values() if isinstance(v, str)]
    if transport.last_success <= before:
        raise transport.not_the_api("/feedback", f"answered no request with a JSON array ({refusals[0]})")
    found = ApiProbe(probe, refused=refusals[0] if refusals else None)
    for rid in probe:
        answer = got[rid]
        if isinstance(answer, str):
            continue
        found.answered += 1
        found.silent += not answer
        found.records += len(answer)
        if answer:
            found.sizes.append(len(json.dumps(answer).encode()))
    return found


def _refused_for_nobody(transport: Transport, probe: list[str], exc: BatchFailed | UrlTooLong, tally: Tally) -> None:
    """``exc`` refused the probe before any request was answered. If a request naming no run's
    data (a random id) is refused too, no run is the cause: the endpoint is not the API
    (``NotLangSmith``), said now rather than after isolating each probed run."""
    if probe:
        try:
            fetch(transport, [str(uuid.uuid4())], tally)
            return  # answered: the probe's runs are the cause
        except (BatchFailed, UrlTooLong) as again:
            if getattr(again, "needs_proof", False):
                return  # maybe an outage: isolation tells
            exc = again
    raise transport.not_the_api("/feedback", f"answered no request with a JSON array ({exc.detail})")


class Preflight:
    """`backfill run`'s pre-flight: ``database`` before the lease is taken, ``api`` before the
    first write; each raises the first failure, in one line."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.report = CheckReport(window)

    def database(self, gw: db.Gateway) -> None:
        """Database, schema, and the privileges of `backfill run`."""
        schema(gw, self.report, server(gw, self.report))
        privileges(self.report, read_only(gw, "check_privileges")[0], ["run"])
        for item in self.report.items:
            if item.level != FAIL:
                continue
            if item.name == "schema":
                raise NotMigrated(f"schema: {item.text}")
            raise MissingPrivileges(
                f"{item.text}: the owner grants them (`backfill db grants {item.detail['role']}`, and"
                " `backfill check` says what else is missing); stopped before anything was written"
            )

    def api(self, gw: db.Gateway, transport: Transport, tally: Tally) -> None:
        """Key, endpoint and workspace, by GET /feedback of the window's newest promising runs."""
        probe = probe_runs(gw, self.window)
        found = probe_api(transport, probe, tally)
        endpoint = transport.settings.endpoint
        if found.wrong_workspace:
            raise WrongWorkspace(
                f"LangSmith at {endpoint} returned no feedback for {found.silent} of the window's"
                f" {found.answered} newest runs whose feedback_stats count records: is LANGSMITH_API_KEY"
                " (and LANGSMITH_WORKSPACE_ID) the workspace these runs came from? Stopped before marking any row"
            )
        if not probe:
            workspace = "workspace not confirmed: no run of the window promises records (feedback_stats)"
        elif not found.answered:
            workspace = f"workspace not confirmed: LangSmith refused the probe's runs ({found.refused})"
        else:
            workspace = (
                f"workspace right: {found.answered - found.silent} of the window's {found.answered} newest runs"
                " promising records got records"
            )
        db_item, schema_item = self.report.items[0], self.report.items[1]
        revision = schema_item.detail.get("revision") or "unconfirmed"
        logs.event(
            "preflight",
            f"pre-flight OK: PostgreSQL {db_item.detail['server_version'].split()[0]} as role"
            f" {db_item.detail['role']}, which may run; schema at {revision}; LangSmith at {endpoint} answers,"
            f" {workspace}",
            probed=len(probe),
            answered=found.answered,
            silent=found.silent,
        )
