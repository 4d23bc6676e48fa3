"""Worker heartbeats: which Celery workers are alive, for the sweeper of stranded jobs.

A worker's main process writes its key every WORKER_HEARTBEAT_SECONDS (workers/celery.py); the key
expires after three missed beats. Imported by the worker before Django is set up: nothing here
touches models.
"""

from __future__ import annotations

from django.conf import settings

from backend.common.redis import keys_client

WORKER_KEY = "jobs:worker:"


def worker_alive(hostname: str) -> None:
    """A worker's heartbeat (its main process, every WORKER_HEARTBEAT_SECONDS): it is up and holds
    whatever jobs it started. Expires after three missed beats."""
    keys_client().set(WORKER_KEY + hostname, 1, ex=int(settings.WORKER_HEARTBEAT_SECONDS * 3))


def worker_gone(hostname: str) -> None:
    keys_client().delete(WORKER_KEY + hostname)


def live_workers(hostnames: set[str]) -> set[str]:
    names = sorted(hostnames)
    if not names:
        return set()
    alive = keys_client().mget([WORKER_KEY + name for name in names])
    return {name for name, value in zip(names, alive, strict=True) if value is not None}
