"""`backfill check`: the pre-flight a DBA runs before a long backfill. It writes nothing.

One item per question, each OK, WARN or FAIL:

* **database**: reachable, and as whom;
* **schema**: our tables at the package's head revision (``feedback_backfill_alembic_version``);
  **app schema**: the app's own ``alembic_version`` holds none of our revisions;
* **privileges**: what `run`, `status`, `verify` and `revert` need, read from the catalog
  (``has_table_privilege``/``has_column_privilege``), never by trying;
* **pooler**: a pooler or proxy in front and whether that is safe (see ``_pooler``);
* **api**: the key is accepted and the workspace is right: the window's newest runs whose
  ``feedback_stats`` promise records (the runner's wrong-workspace probe) get records back;
* **estimates**: pending rows, requests, duration at ``--delay-ms``, WAL and table growth,
  and the days already at retention risk.

Database reads run in transactions made READ ONLY (query ``check_read_only``) and rolled
back; the API probe is GET /feedback only. Exit code: 0 without FAIL, 1 with any.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from backfill.archive import gateway as db
from backfill.archive import reader
from backfill.archive.status import AT_RISK_AGE_DAYS, status
from backfill.config import Database, LangSmith, Window
from backfill.domain import packing
from backfill.domain.checks import FAIL, FAIL_WITHOUT, NEEDS, OK, WARN, CheckReport, Item  # noqa: F401  (re-exported)
from backfill.domain.options import RunOptions
from backfill.domain.records import canonical_run_id
from backfill.domain.rows import Tally
from backfill.domain.units import duration
from backfill.domain.workspace import PROBE_RUNS, wrong_workspace
from backfill.errors import ApiAuthError, BackfillError
from backfill.langsmith import by_run
from backfill.langsmith.transport import BatchFailed, Transport, UrlTooLong
from backfill.operations import migrate


def check(
    database: Database,
    langsmith: Callable[[], LangSmith],
    window: Window,
    *,
    delay_ms: int = 1000,
    batch_size: int = 100,
) -> CheckReport:
    """The pre-flight of ``backfill run`` over ``window``; the API of `backfill check`.

    ``langsmith`` builds the API settings (``LangSmith.from_env``), called inside the check so
    that a missing key is a FAIL line like the others, not an error before any check.
    """
    report = CheckReport(window)
    options = RunOptions(window=window, batch_size=batch_size, delay_ms=delay_ms)
    probe: list[str] = []
    migrated = False
    # why the API probe has no run of the window to ask, when it is not the window itself
    unread: str | None = "the database could not be read"
    try:
        gw = db.connect(database)
    except BackfillError as exc:
        report.add("database", FAIL, str(exc))
        gw = None
    if gw is not None:
        try:
            migrated, probe = _database(gw, report, options)
            unread = None if migrated else "our tables are missing"
        except BackfillError as exc:
            report.add("database", FAIL, str(exc))
        finally:
            gw.close()
        _pooler(database, report)
    sizes = _api(langsmith, report, probe, delay_ms, unread)
    if migrated:
        try:
            _estimates(database, report, options, sizes)
        except BackfillError as exc:
            report.add("estimate", FAIL, str(exc))
    return report


def _read(gw: db.Gateway, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One named query in its own read-only transaction."""
    gw.execute("check_read_only")
    try:
        return gw.execute(name, params)
    finally:
        gw.rollback()


def _database(gw: db.Gateway, report: CheckReport, options: RunOptions) -> tuple[bool, list[str]]:
    """Reachability, the schemas, the privileges; returns (migrated, the probe's run ids)."""
    server = _read(gw, "check_server")[0]
    info = gw.conn.info
    report.add(
        "database",
        OK,
        f"reachable: PostgreSQL {server['server_version'].split()[0]}, role {server['role']},"
        f" database {server['dbname']} on {info.host}:{info.port}",
        role=server["role"],
        server_version=server["server_version"],
    )
    head = migrate.head()
    ours = [r["version_num"] for r in _read(gw, "check_our_version")] if server["ours_readable"] else []
    migrated = bool(_read(gw, "check_schema")[0]["migrated"])
    if migrated and server["ours_table"] and not server["ours_readable"]:
        report.add(
            "schema",
            WARN,
            f"our tables exist; role {server['role']} may not read feedback_backfill_alembic_version to confirm"
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
    if server["app_table"] and not server["app_readable"]:
        report.add("app schema", WARN, f"role {server['role']} may not read the app's alembic_version: not checked")
    else:
        _app_version(gw, report, bool(server["app_table"]))
    _privileges(report, _read(gw, "check_privileges")[0])
    if not migrated:
        return False, []
    w = options.window
    rows = _read(
        gw,
        "workspace_probe_runs",
        {"since": w.since, "until": w.until, "projects": list(w.projects) or None, "n": PROBE_RUNS},
    )
    return True, [r["run_id"] for r in rows if canonical_run_id(r["run_id"]) is not None]


def _app_version(gw: db.Gateway, report: CheckReport, exists: bool) -> None:
    if not exists:
        report.add("app schema", OK, "no alembic_version table of the app's (ours is apart): nothing to disturb")
        return
    theirs = [r["version_num"] for r in _read(gw, "check_app_version")]
    mine = set(migrate_revisions())
    if mine & set(theirs):
        report.add(
            "app schema",
            FAIL,
            f"the app's alembic_version holds our revision {', '.join(sorted(mine & set(theirs)))}: our migrations"
            " were run with the default version table; restore the app's revision there",
            app_revisions=theirs,
        )
    else:
        shown = ", ".join(theirs) or "empty"
        report.add("app schema", OK, f"the app's alembic_version at {shown}, untouched", app_revisions=theirs)


def migrate_revisions() -> list[str]:
    """Every revision id of the package (fb0001 ...)."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()]


def _privileges(report: CheckReport, got: dict[str, Any]) -> None:
    for command, needs in NEEDS.items():
        missing = [what for column, what in needs if not got[column]]
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
        )


def _pooler(database: Database, report: CheckReport) -> None:
    """Is something between us and PostgreSQL, and what?

    Three read-only signals, verified against PgBouncer 1.18 (tests/test_check.py):
    1. the port we connected to differs from ``inet_server_port()`` (the server's own socket):
       a pooler or a TCP proxy is in between;
    2. PgBouncer refuses the ``options`` startup parameter ("unsupported startup parameter")
       unless told to ignore it: that names PgBouncer;
    3. two of our connections whose transactions run on the same server process
       (``pg_backend_pid()``) share server connections: transaction pooling.
    The tool is safe behind both pooling modes (no prepared statements, SET LOCAL only, a
    lease row instead of advisory locks); migrations must go straight to the server.
    """
    a = db.connect(database, connect_timeout=5)
    b: db.Gateway | None = None
    try:
        port = a.conn.info.port
        server_port = _read(a, "check_server")[0]["server_port"]
        proxied = server_port is not None and int(port) != int(server_port)
        pgbouncer = _refuses_options(database)
        if not proxied and not pgbouncer:
            where = f"the server's own port {server_port}" if server_port is not None else "a Unix socket"
            report.add("pooler", OK, f"none: connected straight to PostgreSQL ({where})", pooler=None)
            return
        # transaction pooling: a's server process, freed by its commit, serves b's transaction
        first = _read(a, "check_backend_pid")[0]["backend_pid"]
        b = db.connect(database, connect_timeout=5)
        b.execute("check_read_only")
        other = b.execute("check_backend_pid")[0]["backend_pid"]
        b.rollback()
        mode = "transaction pooling" if other == first else "session pooling (or spare server connections)"
        what = "PgBouncer" if pgbouncer else "a pooler or proxy"
        report.add(
            "pooler",
            OK,
            f"{what} in front (port {port} -> server port {server_port}), {mode}: safe for run/status/verify/revert"
            " (no prepared statements, SET LOCAL, a lease row); run `backfill db upgrade` straight to the server",
            pooler="pgbouncer" if pgbouncer else "unknown",
            pool_mode="transaction" if other == first else "session",
        )
    except BackfillError as exc:
        report.add("pooler", WARN, f"could not tell: {exc}")
    finally:
        a.close()
        if b is not None:
            b.close()


def _refuses_options(database: Database) -> bool:
    try:
        conn = psycopg.connect(database.url, options="-c statement_timeout=10s", connect_timeout=5)
    except psycopg.Error as exc:
        return "unsupported startup parameter" in str(exc)
    conn.close()
    return False


def key_name(settings: LangSmith) -> str:
    """The key as a message may show it: its variable and its last 4 characters."""
    tail = f" (...{settings.api_key[-4:]})" if len(settings.api_key) >= 12 else ""
    return f"LANGSMITH_API_KEY{tail}"


def _api(
    factory: Callable[[], LangSmith], report: CheckReport, probe: list[str], delay_ms: int, unread: str | None = None
) -> list[int]:
    """Key and workspace, by GETs of the probe's runs; returns the JSON sizes of their records.
    ``unread``: why the window's runs could not be read (then only the key is probed)."""
    try:
        settings = factory()
    except BackfillError as exc:
        report.add("api", FAIL, str(exc))
        return []
    ws = f", LANGSMITH_WORKSPACE_ID {settings.workspace_id}" if settings.workspace_id else ""
    # no waiting: a 429 or an outage is reported, not waited out
    source = Transport(
        settings,
        delay_ms=0,
        max_retries=1,
        backoff_s=0.2,
        outage_wait_s=0.0,
        rate_limit_first_s=1.0,
        rate_limit_budget_s=1.0,
    )
    try:
        asked = probe or [str(uuid.uuid4())]
        got = by_run.fetch(source, asked, Tally())
    except ApiAuthError:
        report.add(
            "api",
            FAIL,
            f"LangSmith at {settings.endpoint} refused {key_name(settings)}{ws} (401/403): check LANGSMITH_API_KEY"
            " and LANGSMITH_WORKSPACE_ID",
        )
        return []
    except (BackfillError, BatchFailed, UrlTooLong) as exc:
        report.add("api", FAIL, f"LangSmith at {settings.endpoint} does not answer: {exc}")
        return []
    finally:
        source.close()
    if unread is not None:
        report.add(
            "api",
            WARN,
            f"{key_name(settings)} accepted at {settings.endpoint}; the workspace was not probed: {unread}, so no"
            " run of the window could be asked for",
        )
        return []
    if not probe:
        report.add(
            "api",
            WARN,
            f"{key_name(settings)} accepted at {settings.endpoint}; the workspace cannot be confirmed: no run of the"
            " window promises records (feedback_stats)",
        )
        return []
    silent = [rid for rid in probe if not got.get(rid)]
    records = sum(len(got.get(rid) or []) for rid in probe)
    if wrong_workspace(len(silent), len(probe)):
        report.add(
            "api",
            FAIL,
            f"{key_name(settings)}{ws} gets no feedback for {len(silent)} of the window's {len(probe)} newest runs"
            " whose feedback_stats promise records: wrong workspace? Check LANGSMITH_API_KEY and"
            " LANGSMITH_WORKSPACE_ID",
            probed=len(probe),
            silent=len(silent),
        )
        return []
    report.add(
        "api",
        OK,
        f"{key_name(settings)} accepted at {settings.endpoint}; workspace right: {len(probe) - len(silent)} of the"
        f" window's {len(probe)} newest runs promising records got {records} record(s)",
        probed=len(probe),
        silent=len(silent),
        records=records,
    )
    return [len(json.dumps(got[rid]).encode()) for rid in probe if got.get(rid)]


def _estimates(database: Database, report: CheckReport, options: RunOptions, api_sizes: list[int]) -> None:
    w = options.window
    where = {"since": w.since, "until": w.until, "projects": list(w.projects) or None}
    gw = db.connect(database)
    try:
        # what `backfill run` will visit (its progress bar's total), a day at a time
        pending = reader.count_pending(gw, options, read=partial(_read, gw))
        stored = _read(gw, "check_stored_size", where)[0]
        lacking = _read(gw, "check_pending_size", where)[0]
    finally:
        gw.close()
    rep = status(database, w)
    promised = rep.data.promised_lacking
    requests = packing.requests(pending, promised, options.batch_size)
    seconds = requests * options.delay_ms / 1000
    est: dict[str, Any] = {
        "pending": pending,
        "requests": requests,
        "batch_size": options.batch_size,
        "delay_ms": options.delay_ms,
        "duration_s": seconds,
        "promised_rows": promised,
    }
    report.add(
        "pending",
        OK,
        f"{pending:,} row(s) to examine: {requests:,} request(s) of at most {options.batch_size} run ids,"
        " packed by the records their feedback_stats promise (a run with over 100 records needs more)",
        pending=pending,
        requests=requests,
    )
    report.add(
        "duration",
        OK,
        f"at least {duration(seconds, minutes_past_a_day=True)} at --delay-ms {options.delay_ms}"
        " (one request per delay; the API's answer times, 429s and outages add)",
        seconds=seconds,
    )
    # The size of what is added: our stored records if any, else what the probe fetched.
    if stored["n"]:
        per_row, how = float(stored["records_bytes"]), f"average of {stored['n']} stored feedback_records (jsonb)"
    elif api_sizes:
        per_row, how = sum(api_sizes) / len(api_sizes), f"average API answer of {len(api_sizes)} probed run(s) (JSON)"
    else:
        per_row, how = 0.0, "nothing to measure yet (no stored records, no probe answer)"
    document = float(lacking["document_bytes"] or 0.0)
    table = per_row * promised
    wal = (document + per_row) * promised
    est.update(
        records_bytes_per_row=round(per_row), document_bytes=round(document), table_bytes=table, wal_bytes=wal, how=how
    )
    report.add(
        "growth",
        OK,
        f"table +{_size(table)}, WAL ~{_size(wal)} for {promised:,} row(s) whose feedback_stats promise records:"
        f" x {_size(per_row)} of records each ({how}); WAL adds the whole document each UPDATE rewrites"
        f" ({_size(document)} stored on average, {lacking['n']} sampled); old versions stay as dead tuples until"
        " VACUUM",
        table_bytes=table,
        wal_bytes=wal,
    )
    risky = [d for d in rep.days if d.pending and (rep.as_of.date() - d.run_date).days >= AT_RISK_AGE_DAYS]
    est["at_risk_days"] = [{"run_date": d.run_date.isoformat(), "pending": d.pending} for d in risky]
    if risky:
        shown = ", ".join(f"{d.run_date} ({d.pending:,})" for d in risky)
        report.add(
            "retention",
            WARN,
            f"{len(risky)} day(s) {AT_RISK_AGE_DAYS}+ days old with pending rows: {shown}; run these first"
            " (LangSmith keeps base traces 14 days)",
        )
    else:
        report.add("retention", OK, f"no day {AT_RISK_AGE_DAYS}+ days old with pending rows")
    report.estimates = est


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover
