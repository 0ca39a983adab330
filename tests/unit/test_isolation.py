"""Isolating what the API refuses (``langsmith.by_run.fetch_isolating``) with a scripted transport.

``Scripted`` stands in for ``Transport``: it answers from a dict, refuses (as a 500) every
request naming a poisoned run or sent during an outage, answers 414 above ``url_ids`` ids,
and counts every request, probes included, in the caller's tally as ``Transport`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from backfill.domain.rows import Tally
from backfill.langsmith.by_run import fetch_isolating
from backfill.langsmith.transport import BatchFailed, UrlTooLong
from backfill.sandbox import synthetic

RUNS = [synthetic.run_id_for(i, "isolation") for i in range(100)]


def records_of(run_id: str) -> list[dict[str, Any]]:
    """One record for every other run: no request of 100 runs fills a page."""
    if int(run_id[-1], 16) % 2:
        return []
    return [{"id": synthetic.run_id_for(0, run_id), "run_id": run_id, "key": "final_verdict"}]


@dataclass
class Scripted:
    poisoned: set[str] = field(default_factory=set)
    url_ids: int | None = None  # more ids than this in a request: 414
    outage: int = 0  # the next requests fail (500), probes included
    max_ids: int = 100
    sent: int = 0
    last_success: int = 0
    known_good: str | None = None
    probes: int = 0
    asked: list[list[str]] = field(default_factory=list)

    def get_page(self, params: dict[str, Any], tally: Tally, path: str = "/feedback") -> list[Any]:
        assert path == "/feedback" and params["limit"] == 100
        runs = list(params["run"])
        self.sent += 1
        tally.requests += 1
        self.asked.append(runs)
        if self.url_ids is not None and len(runs) > self.url_ids:
            tally.errors += 1
            raise UrlTooLong("HTTP 414")
        if self.outage or self.poisoned & set(runs):
            self.outage = max(0, self.outage - 1)
            tally.errors += 1
            raise BatchFailed("HTTP 500", self.sent, needs_proof=True)
        self.last_success = self.sent
        found = [rec for run in runs for rec in records_of(run)]
        return found[params["offset"] : params["offset"] + params["limit"]]

    def proven(self, exc: BatchFailed, tally: Tally) -> bool:
        return not exc.needs_proof or self.last_success > exc.seq or self.healthy(exc.detail, tally)

    def healthy(self, detail: str, tally: Tally) -> bool:
        """A probe naming ``known_good``: answered at once (True), or after an outage was waited out (False)."""
        step = 0
        while True:
            self.probes += 1
            self.sent += 1
            tally.requests += 1
            if not self.outage:
                self.last_success = self.sent
                return step == 0
            self.outage -= 1
            tally.errors += 1
            step += 1


def isolate(transport: Scripted, runs: list[str] = RUNS) -> tuple[dict[str, Any], Tally]:
    tally = Tally()
    sent = transport.sent
    got = fetch_isolating(transport, runs, tally)  # type: ignore[arg-type]  # the stand-in for Transport
    assert tally.requests == transport.sent - sent  # every request is counted in the caller's tally
    return got, tally


def expected(failed: dict[str, str] | None = None, runs: list[str] = RUNS) -> dict[str, Any]:
    return {r: (failed or {}).get(r, records_of(r)) for r in runs}


def test_a_batch_the_api_answers_costs_one_request() -> None:
    t = Scripted()
    got, tally = isolate(t)
    assert got == expected() and t.sent == 1 and t.known_good == RUNS[0]
    assert tally.records == sum(len(records_of(r)) for r in RUNS)


@pytest.mark.parametrize("n", [100, 64, 37, 2])
def test_one_poisoned_run_in_n_is_found_in_at_most_2_ceil_log2_n_plus_2_requests(n: int) -> None:
    """The whole batch, two requests per halving, one probe when the culprit is the last of its pair."""
    bound = 2 * math.ceil(math.log2(n)) + 2
    spent = []
    for culprit in RUNS[:n]:
        t = Scripted(poisoned={culprit})
        got, tally = isolate(t, RUNS[:n])
        assert got == expected({culprit: "API error: HTTP 500"}, RUNS[:n])
        assert tally.errors == sum(1 for asked in t.asked if culprit in asked)
        spent.append(t.sent)
    assert max(spent) == bound  # 16 for 100 runs: reached, never passed


@pytest.mark.parametrize(("a", "b"), [(3, 70), (10, 20), (0, 99), (49, 50)])
def test_two_poisoned_runs_are_both_isolated_and_the_others_answered(a: int, b: int) -> None:
    t = Scripted(poisoned={RUNS[a], RUNS[b]})
    got, _ = isolate(t)
    assert got == expected({RUNS[a]: "API error: HTTP 500", RUNS[b]: "API error: HTTP 500"})
    if (a < 50) != (b < 50):
        assert t.probes >= 1  # both halves refused: the API is probed before a run is blamed


def test_an_outage_marks_no_run_and_the_batch_is_asked_again() -> None:
    # the batch, both halves and the first probe fail; the next probe is answered: ask again
    t = Scripted(outage=4)
    got, _ = isolate(t)
    assert got == expected() and t.probes == 2
    assert t.asked[-1] == RUNS  # the whole batch again, once the outage was over


def test_a_url_too_long_lowers_max_ids_for_the_rest_of_the_invocation() -> None:
    t = Scripted(url_ids=30)
    got, tally = isolate(t)
    assert got == expected() and t.max_ids == 25
    assert [len(a) for a in t.asked] == [100, 50, 25, 25, 25, 25] and tally.errors == 2
    got, _ = isolate(t, RUNS[:60])  # later batches start at the lowered size
    assert got == expected(runs=RUNS[:60]) and [len(a) for a in t.asked[6:]] == [25, 25, 10]


def test_a_url_too_long_while_isolating_lowers_max_ids_too() -> None:
    class PoisonFirst(Scripted):
        """A server that refuses a poisoned request (500) before it looks at the URL's length."""

        def get_page(self, params: dict[str, Any], tally: Tally, path: str = "/feedback") -> list[Any]:
            if self.poisoned & set(params["run"]):
                self.sent += 1
                tally.requests += 1
                self.asked.append(list(params["run"]))
                raise BatchFailed("HTTP 500", self.sent, needs_proof=True)
            return super().get_page(params, tally, path)

    t = PoisonFirst(poisoned={RUNS[7]}, url_ids=40)
    got, _ = isolate(t)
    assert got == expected({RUNS[7]: "API error: HTTP 500"})
    # the batch (500), its first half (500), its second half (414): 25 ids a request from then on
    assert [len(a) for a in t.asked[:3]] == [100, 50, 50]
    assert t.max_ids == 25 and all(len(a) <= 25 for a in t.asked[3:])


def test_one_run_whose_url_is_too_long_is_failed_alone() -> None:
    t = Scripted(url_ids=0)
    got, _ = isolate(t, RUNS[:1])
    assert got == {RUNS[0]: "API error: HTTP 414 (URL too long for one run id)"}
    assert t.max_ids == 100  # one id cannot be asked in fewer


def test_a_refusal_that_needs_no_proof_is_believed_without_a_probe() -> None:
    class Refusing(Scripted):
        def get_page(self, params: dict[str, Any], tally: Tally, path: str = "/feedback") -> list[Any]:
            if RUNS[5] in params["run"]:
                self.sent += 1
                tally.requests += 1
                raise BatchFailed("HTTP 422", self.sent)  # the request's own content: no proof needed
            return super().get_page(params, tally, path)

    t = Refusing()
    got, _ = isolate(t, RUNS[:8])
    assert got == expected({RUNS[5]: "API error: HTTP 422"}, RUNS[:8]) and t.probes == 0
