"""The benchmark's WebSocket client: many sockets in one process, each a callback, no task.

The benchmarks measure the server, so a client process must cost as little per frame as it can: on
this 2-core machine the clients share the cores with the Daphnes, the worker and PostgreSQL, and
whatever a client spends on a frame is taken from the server and added to the latency it reports.
`websockets` (what the tests and the CLI use) parses frames in Python and wakes one reading task per
connection for every message; picows parses them in C and calls `on_text` from the protocol's own
`data_received`, with no task or future per message. picows has no permessage-deflate, so a
compressed run (`--deflate`) keeps `websockets`, as before.

    client = await connect(url, on_text, origin="http://127.0.0.1", local_addr=("127.0.0.2", 0))
    client.hello            # the greeting, parsed
    await client.send(text)
    await client.close()

`on_text(text, received_at)` is called for every text message after the greeting, `received_at`
being `time.time()` when the frame was read. Pings are answered by picows itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import picows

OnText = Callable[[str, float], None]

# picows logs every connect and disconnect at INFO: 20,000 lines a phase in a benchmark's output
logging.getLogger("picows").setLevel(logging.WARNING)


class WebSocketRefused(Exception):
    """The handshake failed or the server closed before its greeting."""


async def connect(url: str, on_text: OnText, *, origin: str, compression: str | None = None,
                  local_addr: tuple[str, int] | None = None, timeout: float = 60,
                  on_hello: Callable[[dict], None] | None = None):
    """Open one client; `on_hello(greeting)`, if given, runs before any later message reaches `on_text`."""
    on_hello = on_hello or (lambda _: None)
    if compression:
        return await _WebsocketsClient.connect(url, on_text, on_hello, origin, compression, local_addr, timeout)
    return await _PicowsClient.connect(url, on_text, on_hello, origin, local_addr, timeout)


class _Listener(picows.WSListener):
    """One connection's frames, handed over as they are parsed: the greeting to `on_hello` (and the
    `greeted` future), every later text message to `on_text`; a fragmented message is joined."""

    def __init__(self, greeted: asyncio.Future, on_text: OnText, on_hello: Callable[[dict], None]) -> None:
        self.greeted, self.on_text, self.on_hello = greeted, on_text, on_hello
        self.parts: list[bytes] = []

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind == picows.WSMsgType.TEXT or (kind == picows.WSMsgType.CONTINUATION and self.parts):
            if not frame.fin:
                self.parts.append(frame.get_payload_as_bytes())
                return
            if self.parts:
                self.parts.append(frame.get_payload_as_bytes())
                text = b"".join(self.parts).decode()
                self.parts = []
            else:
                text = frame.get_payload_as_utf8_text()
            if self.greeted.done():
                self.on_text(text, time.time())
            else:
                hello = json.loads(text)
                self.on_hello(hello)
                self.greeted.set_result(hello)
        elif kind == picows.WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        if not self.greeted.done():
            self.greeted.set_exception(WebSocketRefused("closed before the greeting"))


class _PicowsClient:
    def __init__(self, transport) -> None:
        self._transport = transport
        self.hello: dict = {}

    @classmethod
    async def connect(cls, url, on_text, on_hello, origin, local_addr, timeout):
        greeted: asyncio.Future = asyncio.get_running_loop().create_future()
        kwargs = {"local_addr": local_addr} if local_addr else {}
        try:
            transport, _ = await picows.ws_connect(
                lambda: _Listener(greeted, on_text, on_hello), url, extra_headers={"Origin": origin},
                websocket_handshake_timeout=timeout, read_buffer_init_size=4096, use_aiofastnet=False, **kwargs,
            )
        except picows.WSError as exc:
            raise WebSocketRefused(str(exc)) from exc
        client = cls(transport)
        try:
            client.hello = await asyncio.wait_for(greeted, timeout)
        except (TimeoutError, WebSocketRefused):
            transport.disconnect()
            raise
        return client

    @property
    def local_address(self) -> str:
        return self._transport.underlying_transport.get_extra_info("sockname")[0]

    async def send(self, text: str) -> None:
        self._transport.send(picows.WSMsgType.TEXT, text.encode())

    async def close(self) -> None:
        if not self._transport.is_disconnected:
            self._transport.send_close()
            self._transport.disconnect()
        await self._transport.wait_disconnected()


class _WebsocketsClient:
    def __init__(self, ws, on_text: OnText) -> None:
        self._ws, self._on_text = ws, on_text
        self.hello: dict = {}
        self._reader: asyncio.Task | None = None

    @classmethod
    async def connect(cls, url, on_text, on_hello, origin, compression, local_addr, timeout):
        import websockets

        kwargs = {"local_addr": local_addr} if local_addr else {}
        try:
            ws = await websockets.connect(
                url, origin=origin, max_size=None, ping_interval=None, compression=compression,
                open_timeout=timeout, close_timeout=2, **kwargs,
            )
            client = cls(ws, on_text)
            client.hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            on_hello(client.hello)
        except websockets.WebSocketException as exc:
            raise WebSocketRefused(str(exc)) from exc
        client._reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                self._on_text(raw, time.time())
        except Exception:  # noqa: BLE001 - closed at the end of a phase
            pass

    @property
    def local_address(self) -> str:
        return self._ws.local_address[0]

    async def send(self, text: str) -> None:
        await self._ws.send(text)

    async def close(self) -> None:
        await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
