"""How a connection ends: the close codes, and which errors mean "a backing service is briefly away".

4001-4003 are the public contract's; 4008, 4029 and the standard 1011/1013 are ours, all documented
in docs/realtime.md.
"""

from __future__ import annotations

import asyncio

from django.db import Error as DatabaseError
from redis.exceptions import RedisError

CLOSE_AUTH_FAILED = 4001
CLOSE_TOKEN_EXPIRED = 4002
CLOSE_ACCESS_REVOKED = 4003
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY_CONNECTIONS = 4029  # the user already holds WS_MAX_CONNECTIONS_PER_USER sockets
CLOSE_SERVER_ERROR = 1011  # a bug: the server could not serve this connection
CLOSE_TRY_AGAIN_LATER = 1013  # Redis or the database was unavailable while joining: reconnect

# Errors that mean "a backing service is briefly away", not "a bug".
TRANSIENT_ERRORS = (RedisError, DatabaseError, OSError, asyncio.TimeoutError)
