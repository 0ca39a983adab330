"""The toolkit's errors: one base class; each subclass's docstring is its default message.

The CLI maps them to exit codes in one place (``backfill.cli``) and prints one line.
"""

from __future__ import annotations


class BackfillError(Exception):
    """feedback-backfill failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        # a docstring wrapped over lines is still a one-line message
        super().__init__(message or " ".join((self.__doc__ or "").split()))


class UsageError(BackfillError):
    """Invalid arguments."""

    exit_code = 2


class ConfigError(BackfillError):
    """Configuration is missing or invalid."""


class DatabaseError(BackfillError):
    """The database refused or failed the operation."""


class NotMigrated(BackfillError):
    """The backfill tables do not exist: run `backfill db upgrade` (or `alembic upgrade head` in a checkout) first."""


class AlreadyRunning(BackfillError):
    """Another backfill command holds the lease on this database; wait for it or stop it."""


class LeaseLost(AlreadyRunning):
    """This command's lease expired and another backfill command took it over: stopped before writing the batch in
    flight (nothing of it was written); run the command again once the other one is done."""


class MissingPrivileges(BackfillError):
    """This role lacks privileges `backfill run` needs: `backfill check` lists them, `backfill db grants ROLE`
    grants them; stopped before anything was written."""


class NeedsOwner(BackfillError):
    """This command needs the owner of the backfill tables."""


class Interrupted(BackfillError):
    """Interrupted by a signal; the current batch was abandoned, nothing of it was written."""

    def __init__(self, message: str | None = None, signum: int | None = None) -> None:
        super().__init__(message)
        # 128 + the signal, as a shell reports it: 130 for SIGINT, 143 for SIGTERM
        self.exit_code = 128 + (signum or 2)


class ApiAuthError(BackfillError):
    """LangSmith refused the API key (401/403): check LANGSMITH_API_KEY and LANGSMITH_WORKSPACE_ID."""


class NotLangSmith(BackfillError):
    """LANGSMITH_ENDPOINT is not the LangSmith API (a 404/405, a redirect or a page that is not JSON where
    GET /feedback answers JSON): set it to the API's URL, not the web app's; stopped, nothing of the current
    batch was marked."""


class ApiUnavailable(BackfillError):
    """LangSmith kept failing; nothing of the current batch was marked."""


class WrongWorkspace(BackfillError):
    """LangSmith returned no feedback for runs whose feedback_stats promise some."""


def redact(text: str, secrets: list[str] | list[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***`` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text
