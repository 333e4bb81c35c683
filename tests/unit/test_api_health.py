"""ApiHealth: one log line when the API server goes silent, one when it answers again."""

from __future__ import annotations

import logging

import pytest

from turnstile.operator.handlers.stores import ApiHealth
from turnstile.operator.model.errors import ApiUnreachableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_logs_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    health = ApiHealth(clock)
    error = ApiUnreachableError("GET /x: the API server did not answer (MaxRetryError)")
    with caplog.at_level(logging.WARNING, logger="turnstile.operator.handlers.stores"):
        health.answered()
        for _ in range(3):
            health.failed("re-checking LockStore ns/a", error)
            clock.now += 30
        health.answered()
        health.answered()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "did not answer (GET /x: the API server did not answer (MaxRetryError)" in messages[0]
    assert messages[1] == (
        "the API server answers again after 90 s without it: re-checks resumed"
    )
    assert health.down_since is None
