from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from .models import Unit, User
from .tickets import ticket_issue


class UnitSerializer(serializers.ModelSerializer):
    class Meta:
        model = Unit
        fields = ["id", "code", "name"]


class MeSerializer(serializers.ModelSerializer):
    unit = UnitSerializer(read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "role", "unit"]


class MeView(generics.RetrieveAPIView):
    serializer_class = MeSerializer

    def get_object(self):
        return self.request.user


class UnitViewSet(viewsets.ReadOnlyModelViewSet):
    """All units (codes and names only): a transfer names its destination unit."""

    queryset = Unit.objects.all()
    serializer_class = UnitSerializer
    pagination_class = None


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField()


class TicketThrottle(UserRateThrottle):
    scope = "ws_ticket"


class WsTicketView(APIView):
    """A single-use, 30-second ticket for the WebSocket handshake (`/ws/updates/?ticket=...`), so the
    JWT itself never travels in a URL."""

    throttle_classes = [TicketThrottle]

    @extend_schema(request=None, responses={201: TicketSerializer})
    def post(self, request):
        ticket = ticket_issue(user_id=str(request.user.id), access_exp=int(request.auth["exp"]))
        return Response(
            {"ticket": ticket, "expires_in": settings.WS_TICKET_TTL_SECONDS}, status=status.HTTP_201_CREATED
        )
