"""Configuration: where the archive is, where LangSmith is, and the window to work on."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from backfill.errors import ConfigError, UsageError

#: libpq variables that, without DATABASE_URL, make an empty conninfo meaningful.
PG_ENV = ("PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT", "PGUSER")


#: Where libpq and urlsplit cut a URL: an unencoded one of these splits a password in pieces.
_URL_CUTS = re.compile(r"[@:/?#]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Pieces shorter than this are not hidden (they would blank out ordinary words of a message).
_MIN_PIECE = 3


@dataclass(frozen=True)
class Database:
    """How to reach the archive: a libpq URL, or "" to let libpq read PG* variables."""

    url: str = field(repr=False)  # holds the password: never in a repr or a traceback's locals

    @property
    def password(self) -> str | None:
        """The password in the URL (or PGPASSWORD), only so that messages can hide it."""
        if self.url:
            try:
                pw = urlsplit(self.url).password
            except ValueError:
                pw = None
            if pw:
                return unquote(pw)
        return os.environ.get("PGPASSWORD") or None

    def secrets(self) -> list[str]:
        """Every string a message must not show: the password as written and as decoded, each
        piece of it an unencoded reserved character would cut (libpq names such a piece as a
        host or a token), and PGPASSWORD."""
        found: set[str] = set()
        raw = _raw_password(self.url)
        if raw:
            for text in (raw, unquote(raw)):
                found.add(text)
                found.update(p for p in _URL_CUTS.split(text) if len(p) >= _MIN_PIECE)
        if self.password:
            found.add(self.password)
        env = os.environ.get("PGPASSWORD")
        if env:
            found.add(env)
        return sorted((s for s in found if s), key=len, reverse=True)  # longest first

    @property
    def sqlalchemy_url(self) -> str:
        """The same database for SQLAlchemy/Alembic (psycopg 3 driver)."""
        url = self.url or "postgresql://"
        return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)

    @classmethod
    def from_env(cls, url: str | None = None) -> Database:
        url = url if url is not None else os.environ.get("DATABASE_URL")
        if url:
            if not re.match(r"^postgres(ql)?(\+\w+)?://", url):
                raise ConfigError("DATABASE_URL must look like postgresql://user@host:port/dbname")
            _check_userinfo(url)
            # psycopg speaks plain libpq URLs; accept SQLAlchemy's driver suffix too.
            return cls(re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url))
        if any(os.environ.get(v) for v in PG_ENV):
            return cls("")
        raise ConfigError(
            "no database configured: set DATABASE_URL=postgresql://user@host:port/dbname, the password in"
            " ~/.pgpass or PGPASSWORD (or libpq's PGHOST/PGDATABASE/PGUSER variables)"
        )


def _userinfo(url: str) -> str | None:
    """What precedes the last "@" of the URL's authority (query string aside), as written."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = rest.split("?", 1)[0]
    return rest.rsplit("@", 1)[0] if "@" in rest else None


def _raw_password(url: str) -> str | None:
    info = _userinfo(url)
    if info is None or ":" not in info:
        return None
    return info.split(":", 1)[1]


def _check_userinfo(url: str) -> None:
    """Refuse, without quoting it, a user or password that libpq would cut and then print."""
    info = _userinfo(url)
    if info is None:
        return
    hint = "percent-encode it (@ as %40, / as %2F, ? as %3F, # as %23, % as %25)"
    if "@" in info or "/" in info or "#" in info:
        raise ConfigError(f"DATABASE_URL: the user name or password holds an unencoded reserved character: {hint}")
    if _BAD_ESCAPE.search(info):
        raise ConfigError(f"DATABASE_URL: the user name or password holds a % that starts no %XX escape: {hint}")


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class LangSmith:
    """How to reach LangSmith. Resolved here, not by the SDK, so that nothing implicit is read."""

    api_key: str = field(repr=False)
    endpoint: str = "https://api.smith.langchain.com"
    workspace_id: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_env(
        cls,
        api_key: str | None = None,
        endpoint: str | None = None,
        workspace_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> LangSmith:
        key = api_key or _env("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")
        if not key:
            raise ConfigError("no LangSmith API key: set LANGSMITH_API_KEY (or pass --api-key)")
        url = endpoint or _env("LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT") or cls.endpoint
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"LANGSMITH_ENDPOINT must be an http(s) URL, got {url!r}")
        ws = workspace_id or _env("LANGSMITH_WORKSPACE_ID", "LANGCHAIN_WORKSPACE_ID")
        return cls(api_key=key, endpoint=url.rstrip("/"), workspace_id=ws, timeout_s=timeout_s)


_AGO = re.compile(r"^\s*(-?\d+)\s*([hdw])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    """Runs whose ``run_date`` is in ``[since, until)``; ``projects`` empty means all."""

    since: dt.date
    until: dt.date
    projects: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        since: str = "14d",
        until: str | None = None,
        projects: tuple[str, ...] | list[str] = (),
        today: dt.date | None = None,
    ) -> Window:
        """Parse ``--since``/``--until``: ``14d``, ``36h``, ``2w`` (ago) or an ISO date.

        ``run_date`` is a date, so ``36h`` selects the dates the last 36 hours touch.
        ``--until`` is exclusive when a date is given; the default includes today.
        """
        now = dt.datetime.now(dt.UTC)
        today = today or now.date()
        start = _parse_point(since, "--since", now, today)
        end = _parse_point(until, "--until", now, today) if until else today + dt.timedelta(days=1)
        if end <= start:
            raise UsageError(f"empty window: --until {until} is not after --since {since}")
        if any(not p.strip() for p in projects):
            raise UsageError("--project must not be empty")
        return cls(start, end, tuple(projects))

    @property
    def days(self) -> int:
        return (self.until - self.since).days

    def describe(self) -> str:
        """The window in words, both days counted (``until`` is the day after the last)."""
        last = self.until - dt.timedelta(days=1)
        where = f" in {', '.join(self.projects)}" if self.projects else ""
        return f"run_date {self.since} .. {last} inclusive{where}"


def _parse_point(text: str, flag: str, now: dt.datetime, today: dt.date) -> dt.date:
    m = _AGO.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2).lower()
        if n <= 0:
            raise UsageError(f"{flag} must be a positive duration like 14d, 36h or 2w, got {text!r}")
        delta = {"h": dt.timedelta(hours=n), "d": dt.timedelta(days=n), "w": dt.timedelta(weeks=n)}[unit]
        if unit == "h":
            return (now - delta).date()
        # "14d" means today and the 13 days before it: 14 run dates.
        return today - delta + dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{flag} must be a duration like 14d, 36h, 2w or a date like 2026-11-15, got {text!r}"
        ) from None


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$", re.IGNORECASE)


def parse_interval(text: str, flag: str = "--interval") -> float:
    """``30s``, ``5m``, ``1h`` (or plain seconds) as seconds; must be positive."""
    m = _INTERVAL.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{flag} must be a positive duration like 30s, 5m or 1h, got {text!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[(m.group(2) or "s").lower()]


#: The window of `--all`: every run_date PostgreSQL can hold.
ALL_TIME = Window(dt.date(1, 1, 1), dt.date(9999, 12, 31))
