"""Fixtures for the job pipeline tests: channel-layer listeners and processes a test may kill."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from bench import processes
from tests.support.layer import LayerListener
from tests.support.pipeline import SHORT_TIME_LIMIT, SHORT_VISIBILITY_TIMEOUT


@pytest.fixture
def listen() -> Iterator[Callable[..., LayerListener]]:
    """`listen(units=[...], users=[...])` -> a started LayerListener, stopped after the test."""
    started: list[LayerListener] = []

    def make(**groups) -> LayerListener:
        listener = LayerListener(**groups).start()
        started.append(listener)
        return listener

    yield make
    for listener in started:
        listener.stop()


@pytest.fixture
def own_processes() -> Iterator[list[processes.LiveProcess]]:
    """Processes a test starts (and may kill): whatever is still alive is stopped afterwards."""
    started: list[processes.LiveProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def crash_env(live_env) -> dict[str, str]:
    """Environment for workers a test kills: a short visibility timeout, so Redis hands an
    unacknowledged task to the next worker within seconds."""
    assert SHORT_TIME_LIMIT < SHORT_VISIBILITY_TIMEOUT
    return {
        **live_env,
        "CELERY_TASK_TIME_LIMIT": str(SHORT_TIME_LIMIT),
        "CELERY_VISIBILITY_TIMEOUT": str(SHORT_VISIBILITY_TIMEOUT),
    }


@pytest.fixture
def private_queue() -> str:
    """A queue only this test's workers consume (the session worker listens on default,bulk)."""
    return f"pipeline-{uuid.uuid4().hex[:12]}"
