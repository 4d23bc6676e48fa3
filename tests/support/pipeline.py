"""Helpers for the job pipeline tests: waiting, and control over where (and whether) a job's task
message goes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from django.conf import settings

from workers.celery import app as celery_app

# Crash tests run their own workers with a visibility timeout of a few seconds (the default is
# 15 minutes), keeping the hard time limit below it as production does.
SHORT_TIME_LIMIT = 6
SHORT_VISIBILITY_TIMEOUT = 7


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.1)
    return value


@contextmanager
def held_enqueue() -> Iterator[list[tuple[tuple, dict]]]:
    """Jobs submitted inside the block are committed but their task messages are held back;
    `release(held)` then sends them to the real broker."""
    held: list[tuple[tuple, dict]] = []
    with mock.patch.object(celery_app, "send_task", lambda *args, **kw: held.append((args, kw))):
        yield held


def release(held: list[tuple[tuple, dict]]) -> None:
    for args, kw in held:
        celery_app.send_task(*args, **kw)


def is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith(("postgresql", "postgis"))


requires_postgres = pytest.mark.skipif(
    not is_postgres(), reason="parallel row locks need PostgreSQL (SQLite serialises writers)"
)
