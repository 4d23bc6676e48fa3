"""Named fault points: the places where a test can make a real process pause or fail.

Production code marks a point with `fault_point("job.before_commit")` (or `await
afault_point(...)` on an event loop). Nothing happens there unless `settings.FAULT_POINTS` names
the point. Only the test settings fill it, from the `FAULT_POINTS` environment variable of the
process under test; the production settings refuse to start with it set. So a fault drill can
SIGKILL a worker between COMMIT and publish, or make a Daphne's group_add fail, without a second
code path in production.

    FAULT_POINTS="job.before_commit=pause:5;hub.group_add=raise"

Actions: `pause:<seconds>` (sleep there, after logging `fault point <name> reached`), `block:<seconds>`
(on an event loop: hold the whole loop that long, as a blocking call in async code would), `raise`
(raise InjectedFault: a bug), `drop` (raise InjectedConnectionError: a backing service's connection
dropped, which callers treat as transient). Every point in use is listed in POINTS: a typo in a
test's environment fails loudly instead of silently testing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)

POINTS = {
    "job.before_commit": "a job's change and outbox events are written; its transaction is still open",
    "job.batch_before_commit": "a batch of jobs is applied and recorded; its transaction is still open",
    "job.after_chunk": "a bulk job's chunk has committed; the next one has not started",
    "outbox.before_publish": "events have committed; they are not yet handed to the channel layer",
    "hub.group_add": "a Daphne process is about to join a channel-layer group for a connection",
    "consumer.receive": "a WebSocket consumer is about to handle a client message",
    "credentials.refresh": "a WebSocket's new access token (`refresh`) is about to be checked",
    "connections.release": "a closing WebSocket is about to free its slot of the user's connection cap",
}


class InjectedFault(RuntimeError):
    """Raised at a fault point set to `raise`."""


class InjectedConnectionError(ConnectionError):
    """Raised at a fault point set to `drop`."""


@dataclass(frozen=True)
class Fault:
    action: str  # "pause" | "block" | "raise" | "drop"
    seconds: float = 0.0

    def trip(self, name: str) -> None:
        if self.action == "raise":
            raise InjectedFault(f"fault point {name}")
        if self.action == "drop":
            raise InjectedConnectionError(f"fault point {name}")


def parse_fault_points(text: str) -> dict[str, Fault]:
    """`"a=pause:5;b=raise"` -> {"a": Fault("pause", 5.0), "b": Fault("raise")}."""
    faults: dict[str, Fault] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        name, _, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if name not in POINTS:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(sorted(POINTS))}")
        action, _, argument = spec.partition(":")
        if action in ("pause", "block"):
            faults[name] = Fault(action, float(argument))
        elif action in ("raise", "drop") and not argument:
            faults[name] = Fault(action)
        else:
            raise ValueError(f"fault point {name}: {spec!r} is not pause:<seconds>, block:<seconds>, raise or drop")
    return faults


def _armed(name: str, context: dict) -> Fault | None:
    fault = getattr(settings, "FAULT_POINTS", None)
    fault = fault.get(name) if fault else None
    if fault is not None:
        detail = " ".join(f"{key}={value}" for key, value in context.items())
        logger.warning("fault point %s reached (%s) %s", name, fault.action, detail)
    return fault


def fault_point(name: str, **context: object) -> None:
    fault = _armed(name, context)
    if fault is not None:
        fault.trip(name)
        time.sleep(fault.seconds)


async def afault_point(name: str, **context: object) -> None:
    fault = _armed(name, context)
    if fault is not None:
        fault.trip(name)
        if fault.action == "block":
            time.sleep(fault.seconds)  # deliberately on the loop: nothing else of the process runs
        else:
            await asyncio.sleep(fault.seconds)
