"""A real channel-layer listener for pipeline tests.

It is what Daphne's hub is, minus the WebSockets: a channel of its own (channels_redis with the test
CHANNEL_LAYERS settings) that joins `unit_<id>` / `user_<id>` groups and reads with `layer.receive`.
Its event loop runs in a daemon thread, so a synchronous test can approve, kill and restart
processes while it listens. Everything received is kept, in arrival order, in `received`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from backend.events.groups import unit_group_name, user_group_name
from tests.support.ws import SILENCE_SECONDS


class LayerListener:
    def __init__(self, *, units: list[Any] = (), users: list[Any] = ()):
        self.groups = [unit_group_name(u) for u in units] + [user_group_name(u) for u in users]
        self.received: list[dict] = []
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="layer-listener", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LayerListener:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the listener could not join {self.groups}") from self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._leave(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self._task = self._loop.create_task(self._listen())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
        finally:
            # the core layer has pools to close; the pub/sub layer's proxy closes its own when the
            # loop closes (and answers any other attribute only inside a running loop)
            if hasattr(type(self.layer), "close_pools"):
                self._loop.run_until_complete(self.layer.close_pools())
            self._loop.close()

    async def _listen(self) -> None:
        self.channel = await self.layer.new_channel()
        for group in self.groups:
            await self.layer.group_add(group, self.channel)
        self._ready.set()
        while True:
            message = await self.layer.receive(self.channel)
            with self._changed:
                self.received.append(message)
                self._changed.notify_all()

    async def _leave(self) -> None:
        for group in self.groups:
            await self.layer.group_discard(group, self.channel)

    # --- reading ------------------------------------------------------------------------------

    def frames(self, unit_id: Any) -> list[dict]:
        """Every `data_update` frame received for `unit_<unit_id>` so far, decoded, in arrival order."""
        frames = []
        for message in list(self.received):
            if message["type"] == "unit.events" and message["unit_id"] == str(unit_id):
                for seq, frame, *_activity in message["events"]:
                    decoded = json.loads(frame)
                    assert decoded["seq"] == seq, (seq, frame)  # the envelope's seq is the frame's
                    frames.append(decoded)
        return frames

    def job_statuses(self, job_id: Any) -> list[str]:
        """Statuses of `job_id` pushed to its user's group so far, in arrival order."""
        return [
            m["job"]["status"]
            for m in list(self.received)
            if m["type"] == "job.update" and m["job"]["id"] == str(job_id)
        ]

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "messages"):
        """Block until `predicate()` is truthy (re-checked on every message); return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout}s; received: {self.received}")
                self._changed.wait(remaining)
        return value

    def wait_frames(self, unit_id: Any, count: int, timeout: float = 20.0) -> list[dict]:
        """Wait until at least `count` frames arrived for the unit; return all of its frames."""
        self.wait_for(lambda: len(self.frames(unit_id)) >= count, timeout, f"{count} frames for unit {unit_id}")
        return self.frames(unit_id)

    def frames_after(self, unit_id: Any, seconds: float = SILENCE_SECONDS) -> list[dict]:
        """All frames for the unit received once `seconds` more have passed. Tests compare it with
        exactly what they expect, so an early frame, a late duplicate or a stray one all show."""
        time.sleep(seconds)
        return self.frames(unit_id)
