"""ASGI entry point: HTTP goes to Django, `/ws/updates/` to the realtime consumer.

Run with Daphne: `daphne backend.config.asgi:application` (see Procfile for production flags).
"""


from django.core.asgi import get_asgi_application

from backend.common.entrypoint import declare_process

declare_process("web")  # the web tier's settings: a connection pool, no persistent connections
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from backend.common.proxies import TrustedProxyMiddleware  # noqa: E402
from backend.common.trace import asgi_received  # noqa: E402
from realtime.auth import WebSocketAuthMiddleware, origin_validator  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

# The client's address first, once for both protocols: everything after reads the real one.
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": asgi_received(django_asgi_app),  # the request trace's first stamp (issue 33)
            "websocket": origin_validator(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
        }
    ),
    settings.TRUSTED_PROXIES,
)
