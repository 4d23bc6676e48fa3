"""`python -m realtime.daphne [daphne options] backend.config.asgi:application`

Daphne's own command line, with Daphne's and autobahn's internals replaced where they cost memory,
stall the event loop or drop a close code (realtime/patches/: one module per library, each pinned to
the version it was written against), the garbage collector tuned for thousands of long-lived
connections (`tune_gc`, `freeze_startup`), passes and collections that hold the event loop logged
(realtime/stalls.py), and the opt-in memory census (realtime/census.py).
"""

from __future__ import annotations

import gc
import os

import daphne.cli
import daphne.server

from . import census
from .patches import autobahn as autobahn_patches
from .patches import daphne as daphne_patches
from .stalls import watch_stalls


def tune_gc() -> None:
    """Thousands of long-lived connection objects (about 90 tracked by the collector per connection)
    make the collector's passes long, and they hold the event loop. CPython's defaults (700,10,10)
    put gen-2 passes of tens of milliseconds in the middle of HTTP requests (the API -> client p99
    in docs/performance.md), so generation 0 waits for 50,000 new objects; generation 1 is
    collected after every second young collection instead of every eleventh, because it holds
    everything that survived since then: a connect burst filled it with up to a million objects,
    and one pass took 604 ms. GC_THRESHOLD="700,10,10" restores CPython's defaults."""
    thresholds = [int(n) for n in os.environ.get("GC_THRESHOLD", "50000,1,100").split(",")]
    gc.set_threshold(*thresholds)

def freeze_startup() -> None:
    """Move what start-up made (Django, DRF, Twisted, the URL configuration and every view it
    imports: ~145,000 objects) out of the collector's sight with `gc.freeze()`: they live as long
    as the process, and every full collection walked them all. Run once the reactor is running,
    after Daphne has loaded the application."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URL configuration, and with it every view
    gc.collect()
    gc.freeze()


def main() -> None:
    autobahn_patches.deflate_accept(os.environ.get("WS_DEFLATE", "off").strip().lower() or "off")  # a bad value stops here
    tune_gc()
    daphne.server.reactor.callWhenRunning(freeze_startup)
    daphne_patches.install()
    autobahn_patches.install()
    watch_stalls()
    census.install(daphne.server.reactor)  # REALTIME_CENSUS: the opt-in memory census (realtime/census.py)
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
