"""The relay: `python -m workers.relay`. One long-running loop that keeps two promises within
seconds, also after a crash:

- every event that committed is published: each OUTBOX_SWEEP_SECONDS it publishes whatever stayed
  unpublished past OUTBOX_SWEEP_GRACE_SECONDS (the committing process died between COMMIT and
  publish, or Redis was away); backend/events/outbox.outbox_sweep;
- every job gets run: each JOB_RESCUE_SECONDS it re-enqueues jobs whose task no worker will run (the
  message was lost, or its worker died); backend/jobs/services.jobs_rescue;
- every unit stream whose seq went backwards (a restored database) gets a new epoch, so no client
  resumes across it; backend/events/epochs.streams_watch.

The three fail independently: the sweep's Redis down never stops the rescue (its broker is another
Redis), nor the broker down the sweep, and each task has its own metric
(records_relay_task_last_success_timestamp_seconds, records_relay_task_failures_total{task}; alert
RelayTaskFailing).

It is a process of its own rather than a Celery task on beat's schedule, so the task list operators
watch in Flower shows the work, not 43,200 sweeps a day (docs/operations.md has the measurement).
Several relays may run (rows are locked with SKIP LOCKED; a duplicate publish or re-enqueue is
harmless). A database or Redis outage is waited out with backoff; SIGTERM stops it between rounds.

After every finished round it writes its heartbeat (the round's Unix time) to the keys Redis, read by
/metrics as records_relay_last_round_timestamp_seconds{process} (alert RelayNotRunning).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import django

from backend.common.entrypoint import declare_process  # noqa: E402

declare_process("relay")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import close_old_connections  # noqa: E402

from backend.events.epochs import streams_watch  # noqa: E402
from backend.events.metrics import relay_process_name, relay_round_save, relay_task_save  # noqa: E402
from backend.events.outbox import outbox_sweep  # noqa: E402
from backend.jobs.services import jobs_rescue  # noqa: E402

logger = logging.getLogger("workers.relay")


class Relay:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.failures = 0
        self.next_rescue = 0.0
        self.name = relay_process_name()
        self.heartbeat_failing = False
        self.failing: dict[str, int] = {}  # task -> failed runs in a row

    def stop(self, *_signal) -> None:
        self.stopping.set()

    def round(self) -> None:
        """One round: each task runs on its own; raises only when every task that ran failed."""
        close_old_connections()
        ran = [self.task("sweep", self._sweep), self.task("streams", self._streams)]
        if time.monotonic() >= self.next_rescue:
            self.next_rescue = time.monotonic() + settings.JOB_RESCUE_SECONDS
            ran.append(self.task("rescue", self._rescue))
        if not any(ran):
            raise RuntimeError("every relay task failed this round")

    def task(self, name: str, run) -> bool:
        """Run one task, record its outcome in its own metric; a failure is logged, never raised."""
        try:
            run()
        except Exception:  # noqa: BLE001 - the other tasks still run; this one retries next round
            self.failing[name] = self.failing.get(name, 0) + 1
            logger.warning("relay %s failed (%d in a row)", name, self.failing[name], exc_info=True)
            ok = False
        else:
            if self.failing.pop(name, 0):
                logger.warning("relay %s works again", name)
            ok = True
        try:
            relay_task_save(self.name, name, ok)
        except Exception:  # noqa: BLE001 - the keys Redis away: the heartbeat says so
            logger.debug("relay %s metric not written", name, exc_info=True)
        return ok

    def _sweep(self) -> None:
        published = outbox_sweep()
        if published:
            logger.info("relay published %d stranded events", published)

    def _rescue(self) -> None:
        rescued = jobs_rescue()
        if rescued:
            logger.warning("relay re-enqueued %d stranded jobs: %s", len(rescued), ", ".join(rescued))

    def _streams(self) -> None:
        renewed = streams_watch()
        if renewed:
            logger.warning("relay gave new stream epochs to units %s", ", ".join(renewed))

    def heartbeat(self) -> None:
        """Record the round just finished. Best effort: a heartbeat that cannot be written (the keys
        Redis is away) never delays publishing; it is logged when it starts and stops failing."""
        try:
            relay_round_save(self.name)
        except Exception:  # noqa: BLE001
            if not self.heartbeat_failing:
                logger.warning("relay heartbeat not written (it shows as RelayNotRunning)", exc_info=True)
            self.heartbeat_failing = True
        else:
            if self.heartbeat_failing:
                logger.warning("relay heartbeat written again")
            self.heartbeat_failing = False

    def run(self) -> None:
        logger.warning(
            "relay started: outbox every %ss, stranded jobs every %ss",
            settings.OUTBOX_SWEEP_SECONDS, settings.JOB_RESCUE_SECONDS,
        )
        while not self.stopping.is_set():
            try:
                self.round()
                self.failures = 0
                pause = settings.OUTBOX_SWEEP_SECONDS
                self.heartbeat()
            except Exception:  # noqa: BLE001 - the database or Redis is away: wait, try again
                self.failures += 1
                pause = min(settings.OUTBOX_SWEEP_SECONDS * 2**self.failures, 30.0)
                logger.warning("relay round failed (%d in a row); next in %.1fs", self.failures, pause, exc_info=True)
            self.stopping.wait(pause)
        logger.warning("relay stopped")


def main() -> None:
    relay = Relay()
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    relay.run()


if __name__ == "__main__":
    main()
