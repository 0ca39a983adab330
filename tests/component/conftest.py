"""The LangSmith side against the fake over real HTTP: a fake per test and transports to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backfill.config import LangSmith
from backfill.langsmith.transport import Transport
from backfill.sandbox.fake_langsmith import FakeLangSmith

KEY = "lsv2_component_key"


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(KEY) as server:
        yield server


@pytest.fixture
def connect(fake: FakeLangSmith) -> Iterator[Callable[..., Transport]]:
    """``connect(**transport_settings)``: a Transport to the fake, quick by default (no delay,
    backoffs of hundredths of a second); closed after the test."""
    made: list[Transport] = []

    def make(**kw: Any) -> Transport:
        settings = LangSmith(
            api_key=kw.pop("api_key", KEY), endpoint=kw.pop("endpoint", fake.url), timeout_s=kw.pop("timeout_s", 5.0)
        )
        kw = {"delay_ms": 0, "backoff_s": 0.01, "rate_limit_first_s": 0.05, "outage_wait_s": 5.0} | kw
        made.append(Transport(settings, **kw))
        return made[-1]

    yield make
    for t in made:
        t.close()
