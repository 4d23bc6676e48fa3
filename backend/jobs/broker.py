"""The Celery broker transport: kombu's Redis transport, with a channel that can be closed while
Redis is gone.

The bug it fixes (kombu 5.7.0 with Celery 5.7.0, redis-py 8.1): when the broker connection drops
while a worker runs a late-acked task and its consumer waits in BRPOP for the next one,

1. Celery's consumer (`on_connection_error_after_connected`) first calls `connection.collect()`,
   which closes the default channel. Since celery/kombu#1733 `Channel.close()` starts by reading
   the pending BRPOP reply, which raises a ConnectionError on the dead socket; the caller swallows
   it, but the channel was never marked closed. `collect()` then detaches the transport's client
   (`transport.client = None`).
2. Celery then closes the same connection again; the half-closed channel goes on to restore its
   unacked message, and kombu builds a connection pool from `transport.client.hostname`: an
   AttributeError on None, which no one catches, and the worker's main process exits
   ("Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')").

This channel finishes its close when that read fails: it stops waiting for the reply, releases its
Redis pools and runs the generic close, which marks it closed before trying to restore (a restore
that fails there is a connection error the caller ignores; the unacked message stays in Redis's
unacked set for the visibility-timeout restore, and the job sweeper re-enqueues a job whose message
was lost). The second close then finds nothing to do. tests/workers/test_outages.py restarts a real
Redis under a running worker to prove it.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Channel as VirtualChannel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
