"""Pure values and rules of the backfill, with no I/O.

Records, rows and outcomes, packing, strategies, settling, the status figures.
"""
