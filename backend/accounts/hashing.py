"""Password hashing: Argon2id, checked in a bounded pool (docs/security.md, "Passwords").

Every password check and every new hash (sign-in, a signature's re-authentication, the admin's
sign-in, a new password, the dummy hash Django computes for an unknown username) runs Argon2id in
one pool per process of PASSWORD_CHECK_WORKERS threads (the cores, by default). argon2-cffi releases
the GIL while it hashes, so the pool uses the cores; and it is the bound: at most that many checks
hold their Argon2 memory (memory_cost KiB each) at once, however many requests arrive together. The
others wait in the pool's queue, holding no hash memory and no database connection (a check outside
a transaction gives its thread's connections back first), and the request threads that serve plain
API calls are not all busy hashing.

Hashes made by an earlier hasher (PBKDF2, or Argon2 with other parameters) are re-hashed with these
parameters when the password is next checked: Django's `check_password` does it at sign-in, and
`accounts.signatures.signature_sign` at a signature. A re-hash is not a new password: it does not end
the user's tokens (their stamp is the user's `password_epoch`, which only a new password changes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher

T = TypeVar("T")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CheckPool:
    """A fixed pool of threads for password hashing, with counters a test can read."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="password-check")
        self._lock = threading.Lock()
        self.running = 0  # checks hashing now
        self.peak = 0  # the most that ever hashed at once in this pool
        self.done = 0

    def run(self, fn: Callable[..., T], *args) -> T:
        return self._executor.submit(self._counted, fn, *args).result()

    def _counted(self, fn: Callable[..., T], *args) -> T:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.running -= 1
                self.done += 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_pool: CheckPool | None = None
_pool_lock = threading.Lock()


def check_pool() -> CheckPool:
    """This process's pool (made on first use, so a forked worker makes its own)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = CheckPool(getattr(settings, "PASSWORD_CHECK_WORKERS", 0) or _cores())
    return _pool


def check_pool_reset() -> None:
    """Drop the pool (after a fork, or when a test changes PASSWORD_CHECK_WORKERS)."""
    global _pool
    old, _pool = _pool, None
    if old is not None:
        old.shutdown()


def _after_fork() -> None:
    global _pool
    _pool = None  # the parent's threads do not exist in the child


os.register_at_fork(after_in_child=_after_fork)


class Argon2idPasswordHasher(Argon2PasswordHasher):
    """Django's Argon2 hasher (Argon2id, same `argon2$argon2id$...` format) with parameters measured
    on our hardware, at or above OWASP's minimum (m=19 MiB, t=2, p=1): m=19 MiB, t=3, p=1 costs
    about 30 ms of CPU per check (docs/security.md has the measurements). Changing them re-hashes
    each password at its next check (`must_update` compares them)."""

    time_cost = 3
    memory_cost = 19456  # KiB (19 MiB): the memory one check holds while it runs
    parallelism = 1

    def encode(self, password, salt):
        release_connections()
        return check_pool().run(super().encode, password, salt)

    def verify(self, password, encoded):
        release_connections()
        return check_pool().run(super().verify, password, encoded)


def release_connections() -> None:
    """Give this thread's database connections back before waiting for the pool (outside a
    transaction only): a burst of checks queued for the pool must not hold the web tier's
    connections (DATABASE_POOL_SIZE per Daphne), or the plain requests behind them wait for a
    connection and answer 503. The next query takes one again."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.in_atomic_block:
            connection.close()
