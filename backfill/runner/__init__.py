"""`backfill run`: the one pipeline and what plugs into it (answers, sinks, the guard), an invocation, follow mode."""
