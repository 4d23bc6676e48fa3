"""ASGI entry point: HTTP goes to Django, `/ws/updates/` to the realtime consumer.

Run with Daphne: `daphne backend.config.asgi:application` (see Procfile for production flags).
"""


import os

from django.core.asgi import get_asgi_application

from backend.common.entrypoint import require_settings_module  # noqa: E402

require_settings_module()
# No persistent database connections in the web tier: a pool. Django's ASGI handler runs each
# request's sync code (views, middleware) in a thread of its own, so a connection kept open there is
# never used again and stays open until its thread is collected: measured, 20 API clients took a
# PostgreSQL server from 1 to 49 idle sessions in 10 s and then to "too many clients"
# (docs/performance.md, "Sustained state changes"). Django's documentation says the same: under ASGI,
# disable persistent connections. Opening a session per request instead cost the database a third
# of its CPU under load, so the web tier takes its connections from a pool of DATABASE_POOL_SIZE
# (default 20, per process; PostgreSQL only) and gives them back after each request. The worker and
# the relay keep CONN_MAX_AGE.
os.environ["CONN_MAX_AGE"] = "0"
os.environ.setdefault("DATABASE_POOL_SIZE", "20")
os.environ["RECORDS_PROCESS"] = "web"  # names its database sessions (settings: application_name)
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
