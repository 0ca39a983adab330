"""The toolkit's errors: one base class; each subclass's docstring is its default message.

The CLI maps them to exit codes in one place (``backfill.cli``) and prints one line.
"""

from __future__ import annotations


class BackfillError(Exception):
    """feedback-backfill failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class UsageError(BackfillError):
    """Invalid arguments."""

    exit_code = 2


class ConfigError(BackfillError):
    """Configuration is missing or invalid."""


class DatabaseError(BackfillError):
    """The database refused or failed the operation."""


class NotMigrated(BackfillError):
    """The backfill tables do not exist: run `alembic upgrade head` first."""


class AlreadyRunning(BackfillError):
    """Another `backfill run` holds the lock on this database; wait for it or stop it."""


class ApiAuthError(BackfillError):
    """LangSmith refused the API key (401/403): check LANGSMITH_API_KEY and LANGSMITH_WORKSPACE_ID."""


class ApiUnavailable(BackfillError):
    """LangSmith kept failing; nothing of the current batch was marked."""


class WrongWorkspace(BackfillError):
    """LangSmith returned no feedback for runs whose feedback_stats promise some."""


def redact(text: str, secrets: list[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
