"""Records where each HTTP request comes from, for the audit entries its changes write."""

from __future__ import annotations

from backend.common.middleware import AroundEachRequest

from .context import origin


def _client(request) -> dict[str, str]:
    # REMOTE_ADDR is the client's address: the real peer, or the client a trusted proxy names
    # (TRUSTED_PROXIES, backend/common/proxies.py); a client's own X-Forwarded-For never gets here.
    return {"client_ip": request.META.get("REMOTE_ADDR", ""), "user_agent": request.META.get("HTTP_USER_AGENT", "")}


class AuditOriginMiddleware(AroundEachRequest):
    """Sync and async (the job detail streams from an async view): each request's changes are
    audited with its client's address and user agent."""

    def around(self, request):
        return origin(**_client(request))
