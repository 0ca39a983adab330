"""The archive: the only code that runs SQL (named queries of ``backfill/sql/queries.sql``), returning domain values."""
