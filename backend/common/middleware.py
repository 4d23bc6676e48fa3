"""Django middleware that runs each request inside a context (`around`), the same way whether the
stack below it is sync or async: neither is forced onto the other (Django's "sync and async
middleware" pattern, written once)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class AroundEachRequest:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def around(self, request) -> AbstractContextManager:
        raise NotImplementedError

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        with self.around(request):
            return self.get_response(request)

    async def _acall(self, request):
        with self.around(request):
            return await self.get_response(request)
