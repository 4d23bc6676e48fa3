from __future__ import annotations

import pytest


@pytest.fixture
def enqueued(monkeypatch) -> list:
    """Jobs handed to the broker, recorded instead of sent: the fast API tests stop at the queue (the
    real-worker path is tested with real processes)."""
    sent: list = []
    monkeypatch.setattr("backend.jobs.queue.enqueue", lambda job: sent.append(job.id))
    return sent
