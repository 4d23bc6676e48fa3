"""ASGI entry point: HTTP goes to Django, `/ws/updates/` to the realtime consumer.

Run with Daphne: `daphne backend.config.asgi:application` (see Procfile for production flags).
"""


from django.core.asgi import get_asgi_application

from backend.common.entrypoint import require_settings_module  # noqa: E402

require_settings_module()
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.auth import WebSocketAuthMiddleware, origin_validator  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validator(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
