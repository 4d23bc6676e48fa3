"""Redis, one database per role (broker, channel layer, short-lived keys), and the channel layer."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from backend.common.redis import cache_settings, channel_layer_host, parse_sentinel_nodes, sentinel_url

from .environment import env

# --- Redis ----------------------------------------------------------------------------------
# One Redis, one database per role: 0 = Celery broker, 1 = channel layer (as in the seed),
# 2 = short-lived keys (WebSocket tickets). Each can be pointed elsewhere on its own.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379")

# High availability: with REDIS_SENTINELS ("host1:26379,host2:26379") every role finds the current
# master through the sentinels instead of REDIS_URL, and follows a failover. The role URLs below then
# default to kombu's `sentinel://host:port/db;...` form (docs/deployment.md, "Redis Sentinel").
REDIS_SENTINELS = parse_sentinel_nodes(env.list("REDIS_SENTINELS", default=[]))
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", default="mymaster")
REDIS_PASSWORD = env("REDIS_PASSWORD", default="")  # the master's, with sentinels (else it is in REDIS_URL)
# How we talk to the sentinels themselves: a dead sentinel must not hang master discovery.
REDIS_SENTINEL_KWARGS = {"socket_timeout": 5, "socket_connect_timeout": 5}
if env("REDIS_SENTINEL_PASSWORD", default=""):
    REDIS_SENTINEL_KWARGS["password"] = env("REDIS_SENTINEL_PASSWORD")


def redis_db_url(base: str, db: int) -> str:
    """`base` with its path replaced by `/db` (the database number in a redis:// URL)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redis_role_url(db: int) -> str:
    """The default URL of one Redis role (database `db`): REDIS_URL's server, or the sentinels'."""
    if REDIS_SENTINELS:
        return sentinel_url(REDIS_SENTINELS, db, REDIS_PASSWORD)
    return redis_db_url(REDIS_URL, db)


CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=redis_role_url(0))
CHANNEL_LAYER_URL = env("CHANNEL_LAYER_URL", default=redis_role_url(1))
KEYS_REDIS_URL = env("KEYS_REDIS_URL", default=redis_role_url(2))
# Django's cache lives in the keys Redis: DRF's throttles count there, one count for every process.
CACHES = cache_settings(KEYS_REDIS_URL)

# --- Channels -------------------------------------------------------------------------------
# Redis pub/sub by default: faster than the core (list-based) layer on our fan-out path, and it
# keeps no group state in Redis; what it does not keep (messages for a hub that is briefly away) the
# hub fills from the outbox anyway. docs/realtime.md, "Channel layer", has the numbers;
# CHANNEL_LAYER_BACKEND switches back.
# redis-py 8 lowered the pool defaults (max_connections=100, socket_timeout=5 s); both are set
# explicitly: a generous pool, and no read timeout on the layer's sockets (the core layer blocks in
# BZPOPMIN; liveness is covered by TCP keepalive and health checks). tests/realtime prove both.
CHANNEL_LAYER_BACKEND = env(
    "CHANNEL_LAYER_BACKEND", default="channels_redis.pubsub.RedisPubSubChannelLayer"
)
# With sentinels the host entry names them and the master instead of an address (same options).
CHANNEL_LAYER_HOST_OPTIONS = {
    "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=10_000),
    # Only tests set this (to prove the guard in tests/realtime/test_resilience.py): leave it unset.
    "socket_timeout": env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=None),
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}
CHANNEL_LAYER_HOST = channel_layer_host(
    CHANNEL_LAYER_URL, master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=REDIS_SENTINEL_KWARGS,
    **CHANNEL_LAYER_HOST_OPTIONS,
)
# More Redis servers for the channel layer (comma-separated URLs): channels-redis spreads the
# groups (`unit_<id>`, `user_<id>`) and each process's channel over `hosts` by a hash of the name,
# so every process must list the same servers in the same order (docs/realtime.md, "Sharding").
CHANNEL_LAYER_SHARD_URLS = env.list("CHANNEL_LAYER_SHARD_URLS", default=[])
CHANNEL_LAYER_HOSTS = [CHANNEL_LAYER_HOST] + [
    channel_layer_host(url, master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=REDIS_SENTINEL_KWARGS,
                       **CHANNEL_LAYER_HOST_OPTIONS)
    for url in CHANNEL_LAYER_SHARD_URLS
]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": CHANNEL_LAYER_BACKEND,
        "CONFIG": {
            "hosts": CHANNEL_LAYER_HOSTS,
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1500),
            "expiry": 60,
            "group_expiry": 86400,
        },
    }
}
if CHANNEL_LAYER_BACKEND.endswith("RedisPubSubChannelLayer"):
    for key in ("capacity", "expiry", "group_expiry"):
        CHANNEL_LAYERS["default"]["CONFIG"].pop(key)

