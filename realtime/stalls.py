"""The server-side trace of a late update, Daphne's part (the hub watches its own loop:
realtime/hub.py `_watch_loop`): each pass of Daphne's over its connections, and each garbage
collection, that held the event loop longer than REALTIME_STALL_WARN_MS is logged (logger
`realtime.daphne`)."""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger("realtime.daphne")

GC_GENERATIONS = ("generation-0", "generation-1", "full")  # how a collection is named in the log

_stall_limit: list[float] = []  # REALTIME_STALL_WARN_MS in seconds, once the settings are loaded

_watching = False  # watch_stalls() was called


def over_limit(took: float) -> bool:
    """Whether a pass that held the loop `took` seconds is worth a warning. Never loads the settings:
    they must load after backend/config/asgi.py has set the web tier's environment (no persistent
    connections, the pool), not before it from here."""
    from django.conf import settings

    if not _watching:
        return False
    if not _stall_limit:
        if not settings.configured:
            return False
        _stall_limit.append(settings.REALTIME_STALL_WARN_MS / 1000 or float("inf"))
    return took > _stall_limit[0]

def note_pass(name: str, started: float, connections: int) -> None:
    took = time.monotonic() - started
    if over_limit(took):
        logger.warning("daphne's %s took %.0f ms over %d connections", name, took * 1000, connections)

def watch_stalls() -> None:
    """The server-side trace of a late update, Daphne's part (the hub watches the loop itself:
    realtime/hub.py `_watch_loop`): log each pass of Daphne's own over its connections (its
    application checker every second, each slice of its timeout and ping checker) and each garbage
    collection, of any generation, that kept the event loop longer than REALTIME_STALL_WARN_MS.
    A young collection is not always short: one of generation 1 walks every object that survived
    the last `GC_THRESHOLD[1]` young ones, and a connect burst leaves a lot of those."""
    global _watching
    _watching = True
    _stall_limit.clear()
    collecting = {}

    def on_gc(phase, info):
        if phase == "start":
            collecting["at"] = time.monotonic()
        elif "at" in collecting:
            took = time.monotonic() - collecting.pop("at")
            if over_limit(took):
                logger.warning("a %s garbage collection took %.0f ms (%d objects collected)",
                               GC_GENERATIONS[info["generation"]], took * 1000, info["collected"])

    gc.callbacks.append(on_gc)
