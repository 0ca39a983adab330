"""The archives the figures measure: the app's schema and synthetic runs, by COPY or server-side.

Every builder turns autovacuum off on `runs` (see harness.SERVER_SETTINGS) and leaves our
own tables to the migration: the figure migrates when it needs them.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from backfill.sandbox import app_schema, synthetic
from bench.harness import DAYS, SINCE


def build_documents(
    url: str,
    rows: int,
    sizes: tuple[int, int],
    seed: str,
    feedback: Callable[[str], list[dict[str, Any]]] | None = None,
    stats: str = "accurate",
) -> None:
    """The app's schema and ``rows`` synthetic runs (backfill.sandbox.synthetic) by COPY, as demo.build_archive.

    Document sizes are spread uniformly over ``sizes`` (bytes of JSON); a third of the runs
    have feedback (and a feedback_stats that counts it). Row i is on run_date SINCE + i*DAYS/rows.
    With ``feedback`` (the fake's, e.g. fake_server.dense_feedback), feedback_stats count its
    records: ``accurate``ly, not at all (``zero``) or three times over (``overstated``).
    """
    with psycopg.connect(url) as conn:
        conn.execute(app_schema().encode())
        with conn.cursor().copy("COPY runs (run_id, trace_id, project, run_date, data) FROM STDIN") as copy:
            for i in range(rows):
                run_id = synthetic.run_id_for(i, seed)
                run_date = SINCE + dt.timedelta(days=i * DAYS // rows)
                size = random.Random(f"{seed}:{i}").randint(*sizes)
                doc = synthetic.run_document(run_id, run_id, f"proj-{i % 3}", run_date, size)
                if feedback is not None:
                    times = {"accurate": 1, "zero": 0, "overstated": 3}[stats]
                    doc["feedback_stats"] = synthetic.feedback_stats_for(feedback(run_id) * times)
                copy.write_row((run_id, run_id, doc["project"], run_date, Jsonb(doc)))
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")  # see SERVER_SETTINGS


# Small documents for the 1 M-row figures, built server-side. Row i is on run_date
# SINCE + i*DAYS/rows. ``sparse`` rows (~5 %, the same sha256 rule as fake_server.sparse_feedback)
# carry a feedback_stats promising one record; the others have none.
FILL_SMALL = """
INSERT INTO runs (run_id, trace_id, project, run_date, data)
SELECT x.u, x.u, x.p, x.d,
       jsonb_build_object(
           'run_id', x.u, 'trace_id', x.u, 'parent_run_id', NULL, 'project', x.p, 'run_date', x.d::text,
           'name', 'agent', 'run_type', 'chain', 'status', 'success', 'error', NULL, 'tags', '[]'::jsonb,
           'inputs', jsonb_build_object('question', 'Synthetic question #' || i),
           'outputs', jsonb_build_object('answer', 'Synthetic answer #' || i),
           'feedback_stats', CASE WHEN %(sparse)s AND get_byte(sha256(convert_to('sparse:' || x.u, 'UTF8')), 0) < 13
               THEN '{"final_verdict": {"n": 1, "avg": 1.0, "stdev": 0.0, "values": {},
                      "comments": ["Human verdict: PASS"],
                      "sources": ["{\\"type\\":\\"api\\",\\"metadata\\":{}}"]}}'::jsonb
               ELSE '{}'::jsonb END)
       || CASE WHEN i > %(examined)s THEN '{}'::jsonb
               WHEN %(layout)s = 'marked' THEN '{"feedback_records": []}'::jsonb
               WHEN i %% 3 = 0
                   THEN '{"feedback_records": [{"key": "final_verdict", "value": {"verdict": "PASS"}}]}'::jsonb
               ELSE '{}'::jsonb END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT md5('bench:' || i)::uuid::text AS u, 'proj-' || (i %% 3) AS p,
                     %(since)s::date + ((i - 1)::bigint * %(days)s / %(rows)s)::int AS d) AS x
"""

# Layout "checkpointed": the examined rows are in the checkpoint as `backfill run` leaves
# them: without feedback as no_feedback (not marked in the row), enriched ones as done with
# the ledger of what was written (records_md5, row_id) and the one record their
# feedback_stats promised (stats_count, as accurate stats leave it; the walk never reads
# the stats of a row holding records).
FILL_NO_FEEDBACK = """
INSERT INTO feedback_backfill_status
    (run_id, run_date, state, attempts, records, stats_count, prior, records_md5, row_id)
SELECT run_id, run_date, CASE WHEN id %% 3 = 0 THEN 'done' ELSE 'no_feedback' END, 1,
       CASE WHEN id %% 3 = 0 THEN 1 ELSE 0 END, CASE WHEN id %% 3 = 0 THEN 1 ELSE 0 END,
       CASE WHEN id %% 3 = 0 THEN 'absent' END,
       CASE WHEN id %% 3 = 0 THEN md5((data -> 'feedback_records')::text) END, id
FROM runs WHERE id <= %(examined)s
"""


def build_small(url: str, rows: int, examined: int = 0, layout: str = "marked", sparse: bool = True) -> None:
    """``sparse``: ~5 % of the rows have a feedback_stats promising a record (fake_server's
    sparse feedback); without it none does, as the examined rows of the walk layouts must."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(app_schema().encode())
        conn.execute(
            FILL_SMALL,
            {"rows": rows, "examined": examined, "layout": layout, "since": SINCE, "days": DAYS, "sparse": sparse},
        )
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")  # see SERVER_SETTINGS


def vacuum(url: str, table: str = "runs") -> None:
    """VACUUM ANALYZE ``runs`` (as autovacuum would have). Our tables are left as a fresh
    migration leaves them (never analyzed: the planner then goes by their actual size),
    not "analyzed while empty", which would make every later plan assume them empty."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {table}" if table else "VACUUM ANALYZE")
