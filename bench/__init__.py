"""feedback-backfill benchmarks: ``python -m bench [--quick]`` regenerates docs/benchmarks.md's Results.

    harness               dates, sizes, server settings; one PostgreSQL, the fake LangSmith, a capped backfill.run
    builders              the archives: the app's schema and synthetic runs
    measures              WAL and growth, pg_stat_statements, a concurrent writer, peak RSS
    per_run               the spec's per-run design, the baseline
    fake_server           the fake LangSmith in its own process (python -m bench.fake_server)
    fig_api               figure 1
    fig_ceiling           figure 2, and figure 5 from the same runs
    fig_walk              figure 3
    fig_migration_memory  figures 6 and 4
    report                the results table and its markdown
    status_bench          how fast `backfill status` is (python -m bench.status_bench)

Run from the project root (where ``bench`` is importable), in the project's venv.
"""
