from django.core.wsgi import get_wsgi_application

from backend.common.entrypoint import require_settings_module

require_settings_module()
application = get_wsgi_application()
