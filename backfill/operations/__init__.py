"""Commands over the runner and the archive, as the CLI and a program call them.

check, verify, retry/reset/revert, migrate.
"""
