from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from backend.accounts.api import MeView, UnitViewSet, WsTicketView
from backend.jobs.api import BulkActionView, JobViewSet
from backend.records.api import (
    CrateViewSet,
    DestructionRequestViewSet,
    SendBackRecordViewSet,
    TransferRequestViewSet,
    WithdrawalRequestViewSet,
)
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


def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("api/auth/token/", TokenObtainPairView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/auth/ws-ticket/", WsTicketView.as_view(), name="ws_ticket"),
    path("api/me/", MeView.as_view(), name="me"),
    path("api/bulk-actions/", BulkActionView.as_view(), name="bulk_actions"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("", ConsoleView.as_view(), name="console"),
    path("metrics", metrics_view, name="metrics"),
]

handler404 = "backend.common.errors.page_not_found"
handler500 = "backend.common.errors.server_error"
