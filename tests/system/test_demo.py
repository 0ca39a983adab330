"""`backfill demo`, the main job's smoke test: real servers, real code paths, nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from ..helpers import wait_for

pytestmark = pytest.mark.slow


def demo(*args: str, **kw) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LANGSMITH_", "PG"))}
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", "demo", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def workdir(err: str) -> str:
    """The demo's own temporary directory, as it printed it."""
    return re.search(r"working directory: (\S+) ", err).group(1)


def test_demo_runs_the_workflow_and_cleans_up():
    proc = demo("--rows", "600")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for line in (
        "$ backfill db upgrade   (in a checkout, the same: alembic upgrade head)",
        "INFO  [alembic.runtime.migration] Running upgrade  -> fb0001, ",
        "\ndatabase at fb0009 (head)\n",
        "$ backfill run --since 14d --delay-ms 20",
        "(the spec's 1000 ms between API requests is shortened to 20 ms for the demo)",
        "examined 420 row(s) of 420 pending",
        "$ backfill status --since 14d",
        "  before: data->'feedback_stats'->'final_verdict'",
        '      "values": {},',
        '        "verdict": "FAIL",',
        '        "rationale": {',
    ):
        assert line in err, line
    assert re.search(r"demo finished in \d+\.\ds", err)
    assert out == ""
    assert not os.path.exists(workdir(err))


def test_demo_keep_leaves_servers_to_explore_then_stops():
    proc = demo("--rows", "90", "--keep")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    exports = re.findall(r"^export \w+=.*$", out, re.MULTILINE)
    assert len(exports) == 3, out
    env = pasted(exports)
    # the URL's query string holds "&": pasted unquoted, the shell would background at it
    assert env["DATABASE_URL"] == re.search(r"^  DATABASE_URL=(\S+)$", err, re.MULTILINE).group(1)
    assert "&port=" in env["DATABASE_URL"] and env["LANGSMITH_API_KEY"] == "demo-not-a-secret"
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        enriched = conn.execute("SELECT count(*) FROM runs WHERE data ? 'feedback_records'").fetchone()[0]
    assert enriched > 0
    stop = re.search(r"^to stop them: (.*)$", err, re.MULTILINE).group(1)
    subprocess.run(stop, shell=True, check=True, capture_output=True)
    wait_for(lambda: not accepts(env["DATABASE_URL"]), 10, "the demo's PostgreSQL to stop")


def pasted(lines: list[str]) -> dict[str, str]:
    """The variables as a shell has them after the lines are pasted into it."""
    names = ("DATABASE_URL", "LANGSMITH_ENDPOINT", "LANGSMITH_API_KEY")
    script = "\n".join(lines) + "\n" + "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env={})
    return dict(zip(names, done.stdout.split("\0")[:-1], strict=True))


def accepts(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def fakes() -> set[str]:
    """Process ids of running demo fake LangSmith servers."""
    out = subprocess.run(
        ["pgrep", "-f", "backfill.sandbox.fake_langsmith .*demo-not-a-secret"], capture_output=True, text=True
    )
    return set(out.stdout.split())


def interactive() -> None:
    """In the child: SIGINT as a terminal's foreground job has it. A suite started in the
    background of a non-interactive shell (``.ci/run &``) ignores SIGINT, and an ignored
    signal stays ignored across exec: the demo would never see the Ctrl-C sent to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_ctrl_c_cleans_up():
    before = fakes()
    proc = demo("--rows", "20000", preexec_fn=interactive)
    assert proc.stderr is not None
    first = [proc.stderr.readline(), proc.stderr.readline()]  # the title, then the directory
    time.sleep(0.5)  # building the archive
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = "".join(first) + rest
    assert proc.returncode == 130, err
    assert "interrupted: everything the demo started was stopped and removed" in err
    assert not os.path.exists(workdir(err))
    assert fakes() <= before  # the fake LangSmith was stopped too
