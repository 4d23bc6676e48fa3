"""The guards in front of every sign-in (the API's and the Django admin's), in this order, each before
any password is hashed:

1. the per-address rate (`LOGIN_RATE_PER_ADDRESS`, every attempt of one real client address);
2. the (username, address) lockout (django-axes: `AXES_FAILURE_LIMIT` failures of the pair lock it
   for `AXES_COOLOFF_TIME`, or until a unit admin unlocks it);
3. the per-username rate (`LOGIN_RATE_PER_USERNAME`): failed password checks of one username from
   addresses it has not signed in from before, whatever those addresses are.

What the per-username rate counts is what makes it safe to keep: only a password check that failed
(Django's `user_login_failed`). An attempt refused by a guard checked no password and counts
against nothing, so a locked (username, address) pair adds nothing however long it keeps trying,
and one address alone can never fill the username's budget (its pair locks first). A pair that has
signed in with the right password before (a "known" address, remembered for
`LOGIN_KNOWN_ADDRESS_DAYS`) is not slowed by the username's count at all: the owner at his usual
address is never kept out by others' failures; that pair is bounded by its own lockout instead.
docs/security.md, "Sign-in", has the trade.

The count is reserved before the check (an atomic increment) and given back when the password was
right or never checked, so a botnet's concurrent guesses cannot all slip under the limit at once.
"""

from __future__ import annotations

import hashlib
import math
import time

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle


class LoginAddressThrottle(AnonRateThrottle):
    """Sign-in attempts per client address (LOGIN_RATE_PER_ADDRESS)."""

    scope = "login_address"


class LoginUsernameThrottle(SimpleRateThrottle):
    """Failed password checks per username, from addresses it has not signed in from
    (LOGIN_RATE_PER_USERNAME), counted in fixed windows of the rate's period. Not one of a view's
    `throttle_classes` (those count every request): `SignInGuard` reserves and gives back."""

    scope = "login_username"
    cache_format = "throttle_%(scope)s_%(ident)s_%(window)s"

    def __init__(self, username: str):
        super().__init__()
        # The exact username, as django-axes and Django's authenticate() read it: a spelling in
        # another case is another (nonexistent) account, which fills no budget but its own.
        self.ident = _digest(username)
        self.key: str | None = None

    def timer(self) -> float:
        return time.time()

    def reserve(self) -> float | None:
        """Count one check now; None if within the rate, else the seconds until the window ends."""
        now = self.timer()
        window = int(now // self.duration)
        key = self.cache_format % {"scope": self.scope, "ident": self.ident, "window": window}
        cache.add(key, 0, timeout=self.duration + 60)
        if _incr(key, 1) > self.num_requests:
            _incr(key, -1)
            return max(1.0, (window + 1) * self.duration - now)
        self.key = key
        return None

    def give_back(self) -> None:
        if self.key is not None:
            _incr(self.key, -1)
            self.key = None


def _incr(key: str, delta: int) -> int:
    try:
        return cache.incr(key, delta)
    except ValueError:  # the window's key expired meanwhile: nothing left to count against
        return 0


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _known_key(username: str, address: str) -> str:
    return f"signin_known_{_digest(f'{username}|{address}')}"


class SignInGuard:
    """One sign-in attempt of `username` from `address`. `refusal()` before the password check
    (None: go ahead), then `settle(failed=..., succeeded=...)` once it ran."""

    def __init__(self, request, username: str, address: str):
        self.request, self.username, self.address = request, username, address
        self.throttle: LoginUsernameThrottle | None = None

    def refusal(self) -> tuple[str, int] | None:
        """("locked_out" | "throttled", seconds to wait), or None."""
        if not AxesProxyHandler.is_allowed(self.request, {"username": self.username}):
            return "locked_out", lockout_wait(self.username, self.address)
        if cache.get(_known_key(self.username, self.address)):
            return None  # this pair signed in before: others' failures never slow it
        self.throttle = LoginUsernameThrottle(self.username)
        wait = self.throttle.reserve()
        return None if wait is None else ("throttled", math.ceil(wait))

    def settle(self, *, succeeded: bool) -> None:
        """After the view ran: a failed password check keeps its count; anything else gives it back,
        and a success remembers the pair."""
        if getattr(self.request, "signin_password_failed", False) and not succeeded:
            return
        if self.throttle is not None:
            self.throttle.give_back()
        if succeeded:
            cache.set(_known_key(self.username, self.address), 1,
                      timeout=settings.LOGIN_KNOWN_ADDRESS_DAYS * 86400)


def password_check_failed(sender, credentials=None, request=None, **kwargs) -> None:
    """`user_login_failed`: Django checked a password (or found no such user) and refused."""
    if request is not None:
        try:
            request.signin_password_failed = True
        except AttributeError:  # pragma: no cover - a request that takes no attributes
            pass


def lockout_wait(username: str, address: str) -> int:
    """Seconds until the lockout of (`username`, `address`) lifts (its last failure plus the cool-off)."""
    last = (AccessAttempt.objects.filter(username=username, ip_address=address)
            .order_by("-attempt_time").values_list("attempt_time", flat=True))
    cool_off = get_cool_off()
    if not last or cool_off is None:
        return 60
    return max(1, math.ceil((last[0] + cool_off - timezone.now()).total_seconds()))
