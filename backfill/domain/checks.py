"""What `backfill check` found: one OK/WARN/FAIL item per question, and what each command needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backfill.config import Window

OK, WARN, FAIL = "OK", "WARN", "FAIL"

#: What each command needs, as (column of check_privileges, what a DBA grants). `verify`
#: without --fix and `status` only read; `revert`/`reset` are the owner's (sql/grants.sql).
NEEDS: dict[str, list[tuple[str, str]]] = {
    "run": [
        ("runs_select", "SELECT on runs"),
        ("runs_update_data", "UPDATE (data) on runs"),
        ("status_select", "SELECT on feedback_backfill_status"),
        ("status_insert", "INSERT on feedback_backfill_status"),
        ("status_update", "UPDATE on feedback_backfill_status"),
        ("invocations_select", "SELECT on feedback_backfill_invocations"),
        ("invocations_insert", "INSERT on feedback_backfill_invocations"),
        ("invocations_update", "UPDATE on feedback_backfill_invocations"),
        ("lease_select", "SELECT on feedback_backfill_lease"),
        ("lease_insert", "INSERT on feedback_backfill_lease"),
        ("lease_update", "UPDATE on feedback_backfill_lease"),
        ("settled_select", "SELECT on feedback_backfill_settled"),
        ("settled_insert", "INSERT on feedback_backfill_settled"),
        ("settled_update", "UPDATE on feedback_backfill_settled"),
        # the project strategy (fb0007): its listings' progress and the records it stages
        # (a record listed again replaces its copy: INSERT ... ON CONFLICT DO UPDATE)
        ("listing_select", "SELECT on feedback_backfill_listing"),
        ("listing_insert", "INSERT on feedback_backfill_listing"),
        ("listing_update", "UPDATE on feedback_backfill_listing"),
        ("staged_select", "SELECT on feedback_backfill_staged"),
        ("staged_insert", "INSERT on feedback_backfill_staged"),
        ("staged_update", "UPDATE on feedback_backfill_staged"),
        ("staged_delete", "DELETE on feedback_backfill_staged"),
    ],
    "status": [
        ("runs_select", "SELECT on runs"),
        ("status_select", "SELECT on feedback_backfill_status"),
        ("invocations_select", "SELECT on feedback_backfill_invocations"),
        ("lease_select", "SELECT on feedback_backfill_lease"),
    ],
    "verify": [
        ("runs_select", "SELECT on runs"),
        ("status_select", "SELECT on feedback_backfill_status"),
        ("runs_update_data", "UPDATE (data) on runs (--fix)"),
        ("status_update", "UPDATE on feedback_backfill_status (--fix)"),
        ("lease_insert", "INSERT on feedback_backfill_lease (--fix)"),
        ("lease_update", "UPDATE on feedback_backfill_lease (--fix)"),
    ],
    "revert": [
        ("runs_select", "SELECT on runs"),
        ("runs_update_data", "UPDATE (data) on runs"),
        ("status_select", "SELECT on feedback_backfill_status"),
        ("status_delete", "DELETE on feedback_backfill_status"),
        ("settled_delete", "DELETE on feedback_backfill_settled"),
        ("lease_insert", "INSERT on feedback_backfill_lease"),
        ("lease_update", "UPDATE on feedback_backfill_lease"),
    ],
}
#: A role that cannot run or read the status fails the check; `revert` (and `verify --fix`)
#: are the owner's by design (the runner role gets no DELETE): a WARN that says so.
FAIL_WITHOUT = ("run", "status")


@dataclass
class Item:
    name: str
    level: str
    text: str
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.level:<5} {self.name:<12} {self.text}"


@dataclass
class CheckReport:
    """What `backfill check` prints: ``lines()``, ``to_json()``, ``exit_code``."""

    window: Window
    items: list[Item] = field(default_factory=list)
    estimates: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, level: str, text: str, **detail: Any) -> Item:
        item = Item(name, level, text, detail)
        self.items.append(item)
        return item

    @property
    def status(self) -> str:
        levels = {i.level for i in self.items}
        return FAIL if FAIL in levels else WARN if WARN in levels else OK

    @property
    def exit_code(self) -> int:
        return 1 if self.status == FAIL else 0

    def lines(self) -> list[str]:
        scope = "" if self.window.projects else " (all projects)"  # describe() names the projects
        out = [f"backfill check: {self.window.describe()}{scope}"]
        out += [i.line() for i in self.items]
        fails = sum(1 for i in self.items if i.level == FAIL)
        warns = sum(1 for i in self.items if i.level == WARN)
        out.append(f"check: {self.status} ({fails} failed, {warns} warning(s), {len(self.items) - fails - warns} ok)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {
                "since": self.window.since.isoformat(),
                "until": self.window.until.isoformat(),
                "projects": list(self.window.projects),
            },
            "checks": [{"name": i.name, "level": i.level, "text": i.text, **i.detail} for i in self.items],
            "estimates": self.estimates,
            "status": self.status,
            "exit_code": self.exit_code,
        }
