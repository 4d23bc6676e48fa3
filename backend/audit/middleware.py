"""Records where each HTTP request comes from, for the audit entries its changes write."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .context import origin


def _client(request) -> dict[str, str]:
    # REMOTE_ADDR is the client's address: the real peer, or the client a trusted proxy names
    # (TRUSTED_PROXIES, backend/common/proxies.py); a client's own X-Forwarded-For never gets here.
    return {"client_ip": request.META.get("REMOTE_ADDR", ""), "user_agent": request.META.get("HTTP_USER_AGENT", "")}


class AuditOriginMiddleware:
    """Sync and async (the job detail streams from an async view): neither is forced onto the other."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        with origin(**_client(request)):
            return self.get_response(request)

    async def _acall(self, request):
        with origin(**_client(request)):
            return await self.get_response(request)
