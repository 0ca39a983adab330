"""Pure values and rules of the backfill: records, rows and outcomes, packing, strategies, settling, the status figures. No I/O."""
