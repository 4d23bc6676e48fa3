"""Reading a process's own channel-layer channel for as long as the process runs: the hub's
(`unit.events`, `job.update`, ...) and presence's (`presence.update`) each run one of these."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


async def receive_forever(
    layer, channel_name: str, dispatch: Callable[[dict], Awaitable[None] | None],
    rejoin: Callable[[], Awaitable[None]], what: str,
) -> None:
    """Hand every message to `dispatch`; one that fails is logged and never stops the reading. A
    receive that fails (Redis restarted or unreachable) is retried after a backoff of 0.1 s doubling
    up to 5 s, and `rejoin` re-adds the channel to its groups (a restarted Redis forgot them)."""
    backoff = 0.1
    while True:
        try:
            message = await layer.receive(channel_name)
            backoff = 0.1
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis restarted or unreachable: wait, re-join
            logger.warning("%s receive failed; retrying in %.1fs", what, backoff, exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            await rejoin()
            continue
        try:
            result = dispatch(message)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - one bad message must not stop the reading
            logger.exception("%s failed to dispatch %s", what, message.get("type"))
