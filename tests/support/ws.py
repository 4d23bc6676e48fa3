"""Real WebSocket clients (the `websockets` library) for tests against a live Daphne."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

# How long "nothing arrives" is watched for. Longer than every path that could still deliver late:
# the hub's outbox fill runs every REALTIME_REVALIDATE_SECONDS (1 s in a test Daphne that ticks),
# and the sweeper publishes anything unpublished after OUTBOX_SWEEP_SECONDS + its grace (1 + 1 s).
SILENCE_SECONDS = 2.5


def ws_url(port: int, **query: Any) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return f"ws://127.0.0.1:{port}/ws/updates/" + (f"?{params}" if params else "")


async def connect(port: int, origin: str | None = "http://127.0.0.1", **query: Any):
    headers = {"Origin": origin} if origin else None
    return await websockets.connect(
        ws_url(port, **query), origin=None, additional_headers=headers, open_timeout=10, max_size=None
    )


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, type_: str, timeout: float = 5.0) -> dict:
    """Skip messages until one of `type_` arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"no {type_} within {timeout}s")
        message = await recv_json(ws, remaining)
        if message["type"] == type_:
            return message


async def collect_updates(ws, count: int, timeout: float = 10.0) -> list[dict]:
    """`count` data_update messages (batches flattened), in arrival order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    updates: list[dict] = []
    while len(updates) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"got {len(updates)} of {count} updates: {updates[-3:]}")
        message = await recv_json(ws, remaining)
        if message["type"] == "data_update":
            updates.append(message)
        elif message["type"] == "data_update_batch":
            updates.extend(message["updates"])
    return updates


async def assert_silent(ws, seconds: float = SILENCE_SECONDS) -> None:
    """Nothing arrives for `seconds` (other than a pong)."""
    try:
        message = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence, got {message}")
