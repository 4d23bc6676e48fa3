from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.routers import SimpleRouter

from backend.accounts.api import (
    MeView,
    RefreshView,
    SignInView,
    UnitViewSet,
    UserViewSet,
    WsTicketView,
    admin_login_guarded,
)
from backend.accounts.tokens import StampedJWTAuthentication
from backend.audit.api import AuditTrailViewSet
from backend.jobs.api import JobViewSet
from backend.notifications.api import NotificationViewSet
from backend.records.api import (
    DestructionRequestViewSet,
    SendBackRecordViewSet,
    TransferRequestViewSet,
    WithdrawalRequestViewSet,
)
from backend.records.bulk_api import BulkActionView, BulkPreviewView
from backend.records.crates_api import CrateViewSet
from backend.records.holds_api import LegalHoldViewSet
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.reports_api import CrateReportView, request_report_view
from backend.records.reviews_api import AuditReviewViewSet
from realtime.views import ConsoleView

from .metrics import metrics_view

router = SimpleRouter()
router.register("crates", CrateViewSet, basename="crate")
router.register("withdrawal-requests", WithdrawalRequestViewSet, basename="withdrawal-request")
router.register("destruction-requests", DestructionRequestViewSet, basename="destruction-request")
router.register("transfer-requests", TransferRequestViewSet, basename="transfer-request")
router.register("sendback-records", SendBackRecordViewSet, basename="sendback-record")
router.register("jobs", JobViewSet, basename="job")
router.register("units", UnitViewSet, basename="unit")
router.register("users", UserViewSet, basename="user")
router.register("audit-trail", AuditTrailViewSet, basename="audit-entry")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("legal-holds", LegalHoldViewSet, basename="legal-hold")
router.register("audit-reviews", AuditReviewViewSet, basename="audit-review")


def healthz(request):
    return JsonResponse({"status": "ok"})


def api_docs_urls() -> list:
    """The schema and Swagger UI, as settings.API_DOCS allows: public, staff only, or not at all."""
    if settings.API_DOCS == "off":
        return []
    if settings.API_DOCS == "staff":
        access = {
            "permission_classes": [IsAdminUser],
            "authentication_classes": [StampedJWTAuthentication, SessionAuthentication],  # 401 with WWW-Authenticate
        }
    elif settings.API_DOCS == "public":
        access = {"permission_classes": [AllowAny]}
    else:
        raise ImproperlyConfigured(f"API_DOCS must be public, staff or off, not {settings.API_DOCS!r}")
    return [
        path("api/schema/", SpectacularAPIView.as_view(**access), name="schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", **access), name="docs"),
    ]


urlpatterns = [
    path("api/auth/token/", SignInView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/refresh/", RefreshView.as_view(), name="token_refresh"),
    path("api/auth/ws-ticket/", WsTicketView.as_view(), name="ws_ticket"),
    path("api/me/", MeView.as_view(), name="me"),
    path("api/bulk-actions/", BulkActionView.as_view(), name="bulk_actions"),
    path("api/bulk-actions/preview/", BulkPreviewView.as_view(), name="bulk_actions_preview"),
    # Printable reports: before the router, which would read `report.pdf` as an id.
    path("api/crates/<uuid:pk>/report.pdf", CrateReportView.as_view(), name="crate_report"),
    *(path(f"api/{entity}-requests/<uuid:pk>/report.pdf", request_report_view(entity), name=f"{entity}_report")
      for entity in REQUEST_KINDS),
    path("api/", include(router.urls)),
    *api_docs_urls(),
    # The admin's sign-in is throttled and locked like the API's (before admin.site.urls claims it).
    path("admin/login/", admin_login_guarded(admin.site.login), name="admin_login_guarded"),
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("", ConsoleView.as_view(), name="console"),
    path("metrics", metrics_view, name="metrics"),
]

handler404 = "backend.common.errors.page_not_found"
handler500 = "backend.common.errors.server_error"
