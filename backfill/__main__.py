"""python -m backfill: the same as the `backfill` command."""

from backfill.cli import main

main()
