"""Redis connection strings, plain or through Sentinel.

Every Redis role (Celery broker, channel layer, WebSocket tickets) is named by one URL setting.
With Sentinel those URLs take kombu's form, `sentinel://[:password@]host:port/db;sentinel://...`
(one entry per sentinel, all with the same db), so Celery reads its broker URL as it is and the
other roles go through the helpers here. The master's name comes from REDIS_SENTINEL_MASTER.

This module is imported by the settings: it must not import Django at import time.

It also holds the clients of the short-lived-keys Redis (KEYS_REDIS_URL: WebSocket tickets,
throttles, per-process metric snapshots), one per process (sync) and one per event loop (async).
"""

from __future__ import annotations

import asyncio as _asyncio
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

SENTINEL_SCHEME = "sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    db: int
    password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_nodes(nodes: list[str]) -> list[tuple[str, int]]:
    """["host1:26379", "host2"] -> [("host1", 26379), ("host2", 26379)]"""
    parsed = []
    for node in (n.strip() for n in nodes if n.strip()):
        host, _, port = node.partition(":")
        parsed.append((host, int(port or 26379)))
    return parsed


def sentinel_url(sentinels: list[tuple[str, int]], db: int, password: str = "") -> str:
    """kombu's multi-sentinel URL for `db`; `password` is the master's (sent to the master only)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"{SENTINEL_SCHEME}://{auth}{host}:{port}/{db}" for host, port in sentinels)


def parse_sentinel_url(url: str) -> SentinelTarget:
    sentinels: list[tuple[str, int]] = []
    db, password = 0, None
    for index, part in enumerate(p for p in url.split(";") if p.strip()):
        parts = urlsplit(part.strip())
        if parts.scheme != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError(f"not a sentinel:// URL: {part!r}")
        sentinels.append((parts.hostname, parts.port or 26379))
        if index == 0:  # like kombu: the first entry carries the db and the password
            db = int(parts.path.strip("/") or 0)
            password = unquote(parts.password) if parts.password else None
    return SentinelTarget(sentinels=sentinels, db=db, password=password)


def channel_layer_host(url: str, *, master_name: str, sentinel_kwargs: dict | None, **options: Any) -> dict:
    """The channels-redis `hosts` entry for `url`: an address, or the sentinels and master name
    (channels_redis.utils.create_pool builds a SentinelConnectionPool from those)."""
    if not is_sentinel_url(url):
        return {"address": url, **options}
    target = parse_sentinel_url(url)
    host = {
        "sentinels": target.sentinels,
        "master_name": master_name,
        "sentinel_kwargs": sentinel_kwargs,
        "db": target.db,
        **options,
    }
    if target.password:
        host["password"] = target.password
    return host


def redis_from_url(url: str, *, asyncio: bool = False, **kwargs: Any):
    """`redis.Redis.from_url(url, **kwargs)`, also for a sentinel:// URL: the client then talks to
    whichever server the sentinels currently name master, and follows a failover."""
    if asyncio:
        import redis.asyncio as client_module
        from redis.asyncio.sentinel import Sentinel
    else:
        import redis as client_module
        from redis.sentinel import Sentinel
    if not is_sentinel_url(url):
        return client_module.Redis.from_url(url, **kwargs)

    from django.conf import settings

    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=settings.REDIS_SENTINEL_KWARGS, **kwargs)
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, db=target.db, password=target.password)


_keys_sync = None
_keys_async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keys_client():
    """The short-lived-keys Redis (KEYS_REDIS_URL), synchronous: one client per process."""
    global _keys_sync
    if _keys_sync is None:
        from django.conf import settings

        _keys_sync = redis_from_url(settings.KEYS_REDIS_URL, socket_timeout=5, socket_connect_timeout=3)
    return _keys_sync


# Connections one process may open to the keys Redis from its event loop. A burst of WebSocket
# handshakes claims slots concurrently: redis-py 8's default pool (100, failing beyond) turned a
# 500-client connect storm into 1013s. This pool waits for a free connection instead.
KEYS_ASYNC_POOL_SIZE = 64
KEYS_ASYNC_POOL_WAIT_SECONDS = 10


def keys_client_async():
    """The short-lived-keys Redis, for the running event loop (redis.asyncio clients are per loop)."""
    from django.conf import settings

    loop = _asyncio.get_running_loop()
    client = _keys_async.get(loop)
    if client is None:
        options = {"socket_timeout": 5, "socket_connect_timeout": 3}
        if is_sentinel_url(settings.KEYS_REDIS_URL):
            client = redis_from_url(settings.KEYS_REDIS_URL, asyncio=True, max_connections=1000, **options)
        else:
            import redis.asyncio as aioredis

            pool = aioredis.BlockingConnectionPool.from_url(
                settings.KEYS_REDIS_URL, max_connections=KEYS_ASYNC_POOL_SIZE, timeout=KEYS_ASYNC_POOL_WAIT_SECONDS,
                **options,
            )
            client = aioredis.Redis(connection_pool=pool)
        _keys_async[loop] = client
    return client


class KeysConnectionPool:
    """The connection pool class of Django's Redis cache (throttles), for the keys Redis: a plain
    redis:// URL as Django would, and a sentinel:// URL through the sentinels (Django alone would
    reject it)."""

    @classmethod
    def from_url(cls, url: str, **options: Any):
        import redis

        if not is_sentinel_url(url):
            return redis.ConnectionPool.from_url(url, **options)
        from django.conf import settings
        from redis.sentinel import Sentinel, SentinelConnectionPool

        target = parse_sentinel_url(url)
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=settings.REDIS_SENTINEL_KWARGS)
        return SentinelConnectionPool(
            settings.REDIS_SENTINEL_MASTER, sentinel, db=target.db, password=target.password, **options
        )


def cache_settings(url: str) -> dict[str, Any]:
    """CACHES for the keys Redis: DRF's throttles count there, shared by every process."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # A list, so Django does not split a multi-sentinel URL at its ';' into "replicas".
            "LOCATION": [url],
            "KEY_PREFIX": "cache",
            "OPTIONS": {
                "pool_class": "backend.common.redis.KeysConnectionPool",
                "socket_timeout": 2,
                "socket_connect_timeout": 2,
            },
        }
    }
