"""What a client may send on an open connection: ping, subscribe / unsubscribe, presence
messages, refresh; each a JSON text frame of at most MAX_CLIENT_MESSAGE_BYTES, through a token bucket
(WS_CLIENT_MESSAGES_PER_SECOND, bursts of WS_CLIENT_MESSAGES_BURST). Whatever a client sends gets
a defined answer: a reply, an `error` frame with its code, or a close; never a 1011.

A mixin of `UpdatesConsumer` (realtime/consumers.py).
"""

from __future__ import annotations

import json
import logging
import re
import time

from django.conf import settings
from django.utils import timezone

from backend.common.faults import afault_point
from backend.events import schema

from . import credentials, selectors, subscriptions
from .closing import (
    CLOSE_ACCESS_REVOKED,
    CLOSE_AUTH_FAILED,
)

logger = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE_BYTES = 4096
# A client's `type` is echoed in an error only when it looks like a message type.
_PRINTABLE_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


class ClientMessages:
    # The last `mine` resolution (ids, monotonic time): reused for WS_MINE_REFRESH_SECONDS.
    mine_resolved: tuple[set[str], float] | None = None

    def _start_messages(self) -> None:
        """A full bucket for a new connection."""
        self.tokens, self.refilled_at, self.limited_at = float(settings.WS_CLIENT_MESSAGES_BURST), time.monotonic(), 0.0

    async def websocket_receive(self, message: dict) -> None:
        if self.identity is None or self.closing:
            return
        if not self._take_token():
            return
        try:
            await afault_point("consumer.receive", user=self.user_id)
            await self.receive(text_data=message.get("text"), bytes_data=message.get("bytes"))
        except Exception:  # noqa: BLE001 - a bug in handling one message must not kill the connection
            logger.exception("handling a client message failed")
            self._error("internal_error", "The server could not handle this message.")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return self._error("binary_not_supported", "Only JSON text frames are accepted.")
        # Counted in UTF-8 bytes, as on the wire (a character is 1 to 4 of them).
        if len(text_data) > MAX_CLIENT_MESSAGE_BYTES // 4 and len(text_data.encode()) > MAX_CLIENT_MESSAGE_BYTES:
            return self._error("message_too_large", f"Messages are limited to {MAX_CLIENT_MESSAGE_BYTES} bytes.")
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: deep nesting ("[[[[..."), which json raises instead of a ValueError.
            return self._error("malformed_json", "The message is not valid JSON.")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return self._error("invalid_message", 'A message is a JSON object with a "type".')
        if message["type"] == "ping":
            return self.send_message(schema.pong(timestamp=timezone.now()))
        if message["type"] in ("subscribe", "unsubscribe"):
            return await self._subscribe(message)
        if message["type"] in ("viewing", "editing", "idle"):
            return self._presence_message(message)
        if message["type"] == "refresh":
            return await self._refresh(message)
        shown = f" {message['type']!r}" if _PRINTABLE_TYPE.match(message["type"]) else ""
        return self._error("unknown_type", f"Unknown message type{shown}.")

    async def _subscribe(self, message: dict) -> None:
        """`subscribe` replaces the filter (any of entities, ids, mine); `unsubscribe` goes back to
        the whole unit. Applies from the next update this connection is handed."""
        if message["type"] == "unsubscribe":
            self.filter = None
            return
        spec = subscriptions.parse_message(message)
        if isinstance(spec, str):
            return self._error("invalid_message", spec)
        self.filter = None if spec.everything else await self._resolve_filter(spec)

    async def _refresh(self, message: dict) -> None:
        """A new access token on the open socket (realtime/credentials.py)."""
        refused = await credentials.refresh(self, message.get("token"))
        if refused is not None:
            await self._close(CLOSE_ACCESS_REVOKED if refused.revoked else CLOSE_AUTH_FAILED)

    async def _resolve_filter(self, spec: subscriptions.FilterSpec) -> subscriptions.Filter:
        mine_ids = None
        if spec.mine:
            # Resolving `mine` reads four tables: at most once per WS_MINE_REFRESH_SECONDS per
            # connection, however many subscribes ask (the ids grow live in between).
            now = time.monotonic()
            if self.mine_resolved is None or now - self.mine_resolved[1] >= settings.WS_MINE_REFRESH_SECONDS:
                found = await selectors.mine_request_ids(self.user_id, self.unit_id, subscriptions.MAX_MINE_IDS)
                self.mine_resolved = (found, now)
            mine_ids = set(self.mine_resolved[0])
        return subscriptions.Filter(spec.entities, spec.ids, spec.mine, self.identity.username, mine_ids)

    def _take_token(self) -> bool:
        """The client-message token bucket: WS_CLIENT_MESSAGES_PER_SECOND, bursts of
        WS_CLIENT_MESSAGES_BURST. A message over it is dropped; the client hears so at most once a
        second (an error per dropped message would only amplify a flood)."""
        now = time.monotonic()
        rate, burst = settings.WS_CLIENT_MESSAGES_PER_SECOND, settings.WS_CLIENT_MESSAGES_BURST
        self.tokens = min(burst, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        if now - self.limited_at >= 1.0:
            self.limited_at = now
            self._error("rate_limited", f"Too many messages: at most {rate:g} a second; this one was dropped.")
        return False

    def _error(self, code: str, text: str) -> None:
        self.send_message(schema.error(code=code, message=text))

