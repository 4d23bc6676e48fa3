"""GET /api/notifications/ (yours, newest first; `?unread=1`), POST …/{id}/read/, POST …/read-all/."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import selectors
from .models import Kind, Notification
from .services import notification_document, notifications_mark_read


class LinkSerializer(serializers.Serializer):
    entity = serializers.CharField()
    id = serializers.UUIDField()


class NotificationSerializer(serializers.Serializer):
    """A notification: the same document the `notification` frame carries."""

    id = serializers.UUIDField(read_only=True)
    kind = serializers.ChoiceField(choices=Kind.choices, read_only=True)
    title = serializers.CharField(read_only=True)
    body = serializers.CharField(read_only=True)
    link = LinkSerializer(read_only=True)
    created_at = serializers.CharField(read_only=True, help_text="UTC, e.g. 2026-01-15T10:30:00.000Z")
    read = serializers.BooleanField(read_only=True)

    def to_representation(self, instance: Notification) -> dict:
        return notification_document(instance)


UNREAD_PARAMETER = OpenApiParameter("unread", OpenApiTypes.BOOL, required=False, description="1: only the unread ones")


class NotificationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Your notifications, newest first. Another user's notification is a plain 404."""

    serializer_class = NotificationSerializer
    filter_backends: list = []

    def get_queryset(self):
        unread = self.request.query_params.get("unread") in ("1", "true")
        # getattr: an anonymous user (drf-spectacular's schema generation) sees nothing.
        return selectors.user_notifications(getattr(self.request.user, "id", None), unread=unread).order_by(
            "-created_at", "-id"
        )

    @extend_schema(parameters=[UNREAD_PARAMETER])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: NotificationSerializer})
    @action(detail=True, methods=["post"])
    def read(self, request, pk=None):
        """Mark one of your notifications read."""
        notification = self.get_object()
        notifications_mark_read(user_id=request.user.id, notification_id=notification.id)
        notification.refresh_from_db(fields=["read_at"])
        return Response(notification_document(notification))

    @extend_schema(request=None, responses={200: inline_serializer("ReadAll", {"marked": serializers.IntegerField()})})
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request):
        """Mark all your notifications read; `marked` says how many were unread."""
        return Response({"marked": notifications_mark_read(user_id=request.user.id)})
