"""Where a change comes from, beyond its actor: the client (address, user agent) and the job.

Entry points set it once (the HTTP middleware for a request, the job runner for a job, from what
the request that queued the job recorded); `services.journal_write` copies it into every entry it
writes. A context variable rather than an argument threaded through every service: it is the
same for every change of one request or job, and no service decides anything by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    client_ip: str = ""
    user_agent: str = ""
    job_id: uuid.UUID | None = None


_origin: ContextVar[Origin] = ContextVar("audit_origin", default=Origin())  # noqa: B039 - frozen


def current_origin() -> Origin:
    return _origin.get()


@contextmanager
def origin(*, client_ip: str = "", user_agent: str = "", job_id: uuid.UUID | str | None = None) -> Iterator[Origin]:
    """Changes made inside come from this client (and job)."""
    value = Origin(
        client_ip=(client_ip or "")[:45],
        user_agent=(user_agent or "")[:300],
        job_id=uuid.UUID(str(job_id)) if job_id else None,
    )
    token = _origin.set(value)
    try:
        yield value
    finally:
        _origin.reset(token)
