"""Database access from the realtime tier's event loop.

Channels' `database_sync_to_async` runs every call on the one thread-sensitive executor that
Django's ASGI handler also uses for sync views. The realtime tier's reads (handshake auth, resume
replay, the hub's catch-up and re-validation) are independent, short, read-only queries, so they run
on the shared thread pool instead (`thread_sensitive=False`): they never queue behind an HTTP view,
and views never queue behind a reconnect storm. Connections are still cleaned up around each call.
"""

from __future__ import annotations

from channels.db import DatabaseSyncToAsync


def realtime_db(func):
    return DatabaseSyncToAsync(func, thread_sensitive=False)
