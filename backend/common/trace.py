"""The request -> client trace (issue 33): one line for a change that reached its clients late, with
the time split into the stages it went through, across the three processes that carry it.

A change made over the API goes: Daphne receives the request, Django authenticates it, the view
commits the job row and (on COMMIT) sends the job's task; a worker receives the task, marks the job
running, commits the change, publishes its events to the channel layer; each Daphne's hub hands
them to the unit's connections. Each of those moments is a stamp (Unix time, one clock: the
processes share a machine, or NTP-synced ones), in order:

    received -> authenticated -> job_row_committed -> enqueued      (web: this request's thread)
    -> worker_received -> started -> committed -> published          (worker: the job's task)
    -> handed_over                                                   (hub)

The stamps travel with the change: in a context variable within a process, in the task message's
headers (TRACE_HEADER) from web to worker, and in the internal channel-layer message from worker
to hub (never in a frame a client gets: the public message schema is unchanged). The hub, once it
handed a traced change to its connections, logs one line if the request arrived more than
REQUEST_TRACE_WARN_MS before (0: never), naming each stage with its milliseconds and the slowest:

    request trace: job <id> unit <unit> seq <seq>: 262 ms from the request (received at <Unix time>)
    to the hand-over; slowest stage: authenticated -> job_row_committed 240 ms; received ->
    authenticated 1.2 -> job_row_committed 240.3 -> enqueued 0.8 -> ... -> handed_over 4.0 ms[;
    waiting for SQLite's write lock 0.4 ms of it]

A stage is named by the stamp that ends it; it runs from the previous stamp present. Changes that
did not come from a request (the relay's sweep, a command, beat) carry no trace and log nothing.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from .middleware import AroundEachRequest

logger = logging.getLogger("backend.trace")

STAGES = (
    "received", "authenticated", "job_row_committed", "enqueued",
    "worker_received", "started", "committed", "published", "handed_over",
)
# The task message header (and the channel-layer message key) carrying the stamps.
TRACE_HEADER = "records_trace"

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("records_trace", default=None)


def trace_begin(received: float | None = None, **fields: Any) -> dict[str, Any]:
    """Start a trace in this context (a request's thread, a task's run); returns its stamps."""
    stamps: dict[str, Any] = {"received": received if received is not None else time.time(), **fields}
    _current.set(stamps)
    return stamps


def trace_adopt(stamps: dict[str, Any] | None) -> None:
    """Carry on a trace received from another process (None: this context has none)."""
    _current.set(dict(stamps) if isinstance(stamps, dict) else None)


def trace_end() -> None:
    _current.set(None)


def trace_current() -> dict[str, Any] | None:
    return _current.get()


def trace_stamp(stage: str, at: float | None = None, *, first: bool = True) -> None:
    """Stamp `stage` now (or `at`) on this context's trace, if it has one. `first`: keep an earlier
    stamp of the same stage (a bulk job's later rounds)."""
    stamps = _current.get()
    if stamps is None or (first and stage in stamps):
        return
    stamps[stage] = at if at is not None else time.time()


def trace_add(field: str, amount: float) -> None:
    """Add `amount` to a counter of this context's trace (e.g. SQLITE_LOCK_FIELD), if it has one."""
    stamps = _current.get()
    if stamps is not None:
        stamps[field] = stamps.get(field, 0.0) + amount


# Milliseconds the change's statements spent getting SQLite's write lock (BEGIN IMMEDIATE and
# autocommit writes, web and worker together): backend/common/db/sqlite3 adds them up.
SQLITE_LOCK_FIELD = "sqlite_lock_ms"


def trace_for_message(**fields: Any) -> dict[str, Any] | None:
    """The stamps to send on (a task's headers, a channel-layer message), with `fields` added to
    this context's trace (e.g. the job id); None without a trace."""
    stamps = _current.get()
    if stamps is None:
        return None
    stamps.update(fields)
    return dict(stamps)


def task_trace_start(request: Any) -> None:
    """A worker begins a task: adopt the trace its message carries (if any) and stamp its receipt."""
    stamps = getattr(request, TRACE_HEADER, None)
    if not isinstance(stamps, dict):
        stamps = (getattr(request, "headers", None) or {}).get(TRACE_HEADER)
    trace_adopt(stamps)
    trace_stamp("worker_received")


# --- the line --------------------------------------------------------------------------------


def stages_ms(stamps: dict[str, Any]) -> list[tuple[str, str, float]]:
    """[(from, to, ms)] for the stamps present, in STAGES order."""
    present = [(stage, float(stamps[stage])) for stage in STAGES if isinstance(stamps.get(stage), int | float)]
    return [(a, b, (tb - ta) * 1000) for (a, ta), (b, tb) in zip(present, present[1:], strict=False)]


def trace_line(stamps: dict[str, Any], unit_id: Any = "", seq: Any = "") -> str:
    stages = stages_ms(stamps)
    total = (float(stamps["handed_over"]) - float(stamps["received"])) * 1000
    slowest = max(stages, key=lambda s: s[2])
    path = " -> ".join([stages[0][0]] + [f"{to} {ms:.1f}" for _, to, ms in stages])
    line = (
        f"request trace: job {stamps.get('job', '?')} unit {unit_id} seq {seq}: {total:.0f} ms from the request "
        f"(received at {float(stamps['received']):.6f}) to the hand-over; "
        f"slowest stage: {slowest[0]} -> {slowest[1]} {slowest[2]:.0f} ms; {path} ms"
    )
    if SQLITE_LOCK_FIELD in stamps:
        line += f"; waiting for SQLite's write lock {float(stamps[SQLITE_LOCK_FIELD]):.1f} ms of it"
    return line


# A message of more events than this is a bulk chunk's (thousands of changes, long after the request
# by design): its line is logged at INFO, not as a warning (as the late-publish line does).
WARNING_MAX_EVENTS = 100


def trace_handed_over(stamps: Any, unit_id: Any = "", seq: Any = "", at: float | None = None, events: int = 1) -> bool:
    """The hub handed a traced change (`events` events) to its connections: log its line if it was
    slow. Returns whether a line was logged."""
    limit = settings.REQUEST_TRACE_WARN_MS
    if not limit or not isinstance(stamps, dict) or not isinstance(stamps.get("received"), int | float):
        return False
    stamps = {**stamps, "handed_over": at if at is not None else time.time()}
    if (stamps["handed_over"] - stamps["received"]) * 1000 <= limit:
        return False
    logger.log(logging.WARNING if events <= WARNING_MAX_EVENTS else logging.INFO, "%s", trace_line(stamps, unit_id, seq))
    return True


_LINE = re.compile(r"request trace: job (\S+) unit (\S*) seq (\S*): (\d+) ms from the request "
                   r"\(received at ([\d.]+)\) to the hand-over; "
                   r"slowest stage: (\w+) -> (\w+) \d+ ms; (\w+) (.*?) ms"
                   r"(?:; waiting for SQLite's write lock ([\d.]+) ms of it)?$")
_STEP = re.compile(r"-> (\w+) (-?[\d.]+)")


def parse_trace_line(line: str) -> dict[str, Any] | None:
    """The line back as {job, unit, seq, total_ms, received, slowest, stages: {stage: ms}[,
    sqlite_lock_ms]} (the bench reads
    the Daphnes' logs with this); None for any other line."""
    found = _LINE.search(line)
    if found is None:
        return None
    job, unit, seq, total, received, slow_from, slow_to, _first, rest, lock = found.groups()
    parsed = {
        "job": job, "unit": unit, "seq": seq, "total_ms": int(total), "received": float(received),
        "slowest": f"{slow_from} -> {slow_to}",
        "stages": {stage: float(ms) for stage, ms in _STEP.findall(rest)},
    }
    if lock is not None:
        parsed[SQLITE_LOCK_FIELD] = float(lock)
    return parsed


# --- the web side --------------------------------------------------------------------------------

SCOPE_KEY = "records_received"


def asgi_received(app):
    """Wrap the HTTP ASGI app: stamp the moment Daphne hands a request to Django (in the event
    loop, before any middleware or thread), for RequestTraceMiddleware."""

    async def stamped(scope, receive, send):
        scope[SCOPE_KEY] = time.time()
        return await app(scope, receive, send)

    return stamped


class RequestTraceMiddleware(AroundEachRequest):
    """First in MIDDLEWARE: each request runs with a trace of its own, begun at the ASGI stamp."""

    @contextmanager
    def around(self, request):
        scope = getattr(request, "scope", None) or {}
        token = _current.set({"received": scope.get(SCOPE_KEY) or time.time()})
        try:
            yield
        finally:
            _current.reset(token)
