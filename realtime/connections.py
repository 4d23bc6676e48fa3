"""Every user's open WebSockets across all Daphne processes: the cap of WS_MAX_CONNECTIONS_PER_USER
(close 4029 beyond it).

Redis (the keys database) holds, per user, the set `ws:user:<user id>` of `<process>|<connection>`
members, and per Daphne process a heartbeat key `ws:proc:<process>` that the process refreshes
every REALTIME_REPORT_SECONDS and that expires five ticks after it stops. A connection claims its
slot with one Lua script that counts the user's members whose process is alive, prunes the others
(a process that was killed: its members go with its heartbeat) and adds the new member only if the
count is below the cap, so two tabs racing for the last slot cannot both get it. A closing
connection removes its member; one whose removal failed (the keys server slow or away at the
close) is remembered and removed again at the next heartbeat, so a lost removal frees its slot one
tick later, not when the set's key expires a day later. The per-tick cost is one key per process,
whatever its number of connections.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from django.conf import settings

from backend.common.faults import afault_point
from backend.common.redis import keys_client_async

logger = logging.getLogger(__name__)

USER_KEY = "ws:user:"
PROCESS_KEY = "ws:proc:"
# Members are kept a day at most even if every release were lost.
USER_KEY_TTL = 86_400
# Releases that failed, retried at each heartbeat: (user id, connection). Bounded: beyond it (the keys
# server away through a storm of closes) the day-long TTL above is what frees them.
MAX_UNRELEASED = 100_000
_unreleased: set[tuple[str, str]] = set()

_CLAIM = """
local key, member, cap, prefix = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local live = 0
for _, m in ipairs(redis.call('SMEMBERS', key)) do
  local process = string.match(m, '^(.*)|')
  if process and redis.call('EXISTS', prefix .. process) == 1 then
    live = live + 1
  else
    redis.call('SREM', key, m)
  end
end
if live >= cap then
  return 0
end
redis.call('SADD', key, member)
redis.call('EXPIRE', key, tonumber(ARGV[4]))
return 1
"""

# This process's name in the registry: host, pid and a random part (pids are reused).
PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def heartbeat_ttl() -> int:
    return max(int(settings.REALTIME_REPORT_SECONDS * 5), 5)


_last_heartbeat = 0.0


async def heartbeat() -> None:
    """Tell the registry this process is alive (its members count) for the next few ticks."""
    global _last_heartbeat
    await keys_client_async().set(PROCESS_KEY + PROCESS, 1, ex=heartbeat_ttl())
    _last_heartbeat = time.monotonic()
    if _unreleased:
        try:
            await release_pending()
        except Exception:  # noqa: BLE001 - still remembered: the next heartbeat tries again
            logger.warning("freeing %d connection slots failed", len(_unreleased), exc_info=True)


async def claim(user_id: str, connection: str) -> bool:
    """Take one of the user's connection slots; False when all are taken."""
    if time.monotonic() - _last_heartbeat > settings.REALTIME_REPORT_SECONDS:
        await heartbeat()  # the first connection of this process comes before the hub's first tick
    result = await keys_client_async().eval(
        _CLAIM, 1, USER_KEY + user_id, f"{PROCESS}|{connection}", settings.WS_MAX_CONNECTIONS_PER_USER,
        PROCESS_KEY, USER_KEY_TTL,
    )
    return bool(result)


async def release(user_id: str, connection: str) -> None:
    """Free the connection's slot; if that fails, it is retried at the next heartbeat (and raises)."""
    try:
        await afault_point("connections.release", user=user_id)
        await keys_client_async().srem(USER_KEY + user_id, f"{PROCESS}|{connection}")
    except BaseException:
        if len(_unreleased) < MAX_UNRELEASED:
            _unreleased.add((user_id, connection))
        raise


async def release_pending() -> int:
    """Remove the members whose release failed, in one round trip; how many were removed."""
    pending = list(_unreleased)
    pipe = keys_client_async().pipeline(transaction=False)
    for user_id, connection in pending:
        pipe.srem(USER_KEY + user_id, f"{PROCESS}|{connection}")
    await pipe.execute()
    _unreleased.difference_update(pending)
    return len(pending)


def unreleased() -> int:
    """How many failed releases wait for the next heartbeat (the hub reports it)."""
    return len(_unreleased)


async def count(user_id: str) -> int:
    """How many members the user's set holds (live or not yet pruned): for tests and operators."""
    return await keys_client_async().scard(USER_KEY + user_id)
