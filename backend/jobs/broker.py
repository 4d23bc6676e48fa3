"""The Celery broker transport: kombu's Redis transport, with a channel that can be closed while
Redis is gone.

Without it, a broker restart under a worker that runs a late-acked task kills the worker's main
process (kombu 5.7.0: `Channel.close()` reads the pending BRPOP reply first, since celery/kombu#1733,
and a dead socket leaves the channel half-closed; the second close then fails on a detached client,
"'NoneType' object has no attribute 'hostname'"). This channel finishes its close when that read
fails. docs/pipeline.md, "The worker survives broker restarts", has the sequence;
tests/workers/test_outages.py restarts a real Redis under a running worker to prove it.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Channel as VirtualChannel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.common.upstream import check_version

LIBRARY = "kombu"
WRITTEN_AGAINST = "5.7.0"
# Could be proposed upstream (celery/kombu, Redis transport: finish close() when reading the pending
# BRPOP reply fails), with tests/workers/test_outages.py's drill as the reproduction.
UPSTREAM = "not reported yet (docs/architecture.md, \"Replaced internals\")"

check_version(LIBRARY, WRITTEN_AGAINST)  # as kombu loads this transport (CELERY_BROKER_TRANSPORT)

CONNECTION_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


class _ClosableWithoutRedis:
    def close(self) -> None:
        try:
            super().close()
        except CONNECTION_LOST:
            if self.closed:
                raise
            self._in_poll = None  # no BRPOP reply can come back on a dead connection
            self._disconnect_pools()
            VirtualChannel.close(self)


class Channel(_ClosableWithoutRedis, kombu_redis.Channel):
    pass


class SentinelChannel(_ClosableWithoutRedis, kombu_redis.SentinelChannel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
