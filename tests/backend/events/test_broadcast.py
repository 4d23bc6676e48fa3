"""The synchronous sender of backend.events.broadcast: a send that hangs must not outlive its caller."""

from __future__ import annotations

import asyncio
import socket

import pytest
from channels_redis.core import RedisChannelLayer

from backend.events import broadcast
from tests.support.pipeline import wait_until


async def _other_tasks() -> int:
    return len(asyncio.all_tasks() - {asyncio.current_task()})


def pending_on_sender_loop() -> int:
    return asyncio.run_coroutine_threadsafe(_other_tasks(), broadcast._runner.loop).result(5)


def test_a_send_stuck_on_an_unresponsive_redis_is_cancelled_when_its_caller_gives_up():
    # given a "Redis" that accepts connections and never answers (a half-dead server or network)
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        address = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
        layer = RedisChannelLayer(hosts=[{"address": address, "socket_timeout": None}])

        # when a worker sends through the per-process loop and gives up after its timeout
        with pytest.raises(TimeoutError):
            broadcast._run(layer.group_send("unit_stuck", {"type": "unit.events", "events": []}), timeout=0.5)

        # then the send is cancelled, not left pending on the loop (holding its connection for good)
        wait_until(lambda: pending_on_sender_loop() == 0, 5, "the stuck send to be cancelled")
        asyncio.run_coroutine_threadsafe(layer.close_pools(), broadcast._runner.loop).result(5)
