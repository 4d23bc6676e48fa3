"""Auth and accounts over HTTP: sign-in (throttled, locked out after repeated failures), token
refresh (rotating), who am I, units, WebSocket tickets, and the unit admin's users list and unlock."""

from __future__ import annotations

import math

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from .models import Role, Unit, User
from .selectors import locked_out_usernames
from .services import user_unlock
from .signatures import signing_unlock
from .signin import LoginAddressThrottle, SignInGuard
from .tickets import ticket_issue


class UnitSerializer(serializers.ModelSerializer):
    class Meta:
        model = Unit
        fields = ["id", "code", "name", "timezone"]


# --- electronic signatures on decisions ------------------------------------------------------------


class SignatureThrottle(UserRateThrottle):
    """Signed decisions per user (`signature` rate): each one costs a password hash."""

    scope = "signature"


def signature_throttle(request, view):
    """What runs before a decision's password is checked: the per-user signature rate (429)."""

    def check() -> None:
        throttle = SignatureThrottle()
        if not throttle.allow_request(request, view):
            raise exceptions.Throttled(wait=throttle.wait())

    return check


class MeSerializer(serializers.ModelSerializer):
    unit = UnitSerializer(read_only=True)
    full_name = serializers.SerializerMethodField(help_text="The printed name signatures manifest")

    class Meta:
        model = User
        fields = ["id", "username", "full_name", "role", "unit"]

    def get_full_name(self, user: User) -> str:
        return (user.get_full_name() or "").strip()


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
        ticket = ticket_issue(
            user_id=str(request.user.id), access_exp=int(request.auth["exp"]),
            stamp=str(request.auth.get(api_settings.REVOKE_TOKEN_CLAIM, "")), unit_id=request.auth.get("unit_id"),
            role=str(request.auth.get("role") or ""),
        )
        return Response(
            {"ticket": ticket, "expires_in": settings.WS_TICKET_TTL_SECONDS}, status=status.HTTP_201_CREATED
        )


# --- sign-in -------------------------------------------------------------------------------------


class LockedOut(exceptions.Throttled):
    default_code = "locked_out"
    default_detail = "Too many failed sign-ins for this user; try again later or ask your unit admin."


class SignInView(TokenObtainPairView):
    """`POST /api/auth/token/`. Throttled per address, then refused while the (username, address)
    pair is locked out (429 `locked_out`, Retry-After: AXES_FAILURE_LIMIT failures within
    AXES_COOLOFF_TIME, until the cool-off ends or a unit admin unlocks it), then slowed per username
    (429 `throttled`) unless the pair signed in before: all before any password is hashed (each
    check costs the server a password hash). backend/accounts/signin.py has the rules."""

    throttle_classes = [LoginAddressThrottle]

    @extend_schema(responses={429: OpenApiResponse(description="Throttled, or locked out after repeated failures")})
    def post(self, request, *args, **kwargs):
        username = request.data.get("username") if isinstance(request.data, dict) else None
        if not isinstance(username, str) or not username:
            return super().post(request, *args, **kwargs)  # the serializer's 400: no password is checked
        if len(username) > User._meta.get_field("username").max_length:
            # No account has such a name, and the failed-attempt record could not store it (a 500).
            raise exceptions.ValidationError({"username": ["No account has a username this long."]})
        guard = SignInGuard(request, username, request.META.get("REMOTE_ADDR", ""))
        refused = guard.refusal()
        if refused is not None:
            code, wait = refused
            raise LockedOut(wait=wait) if code == "locked_out" else exceptions.Throttled(wait=wait)
        succeeded = False
        try:
            response = super().post(request, *args, **kwargs)
            succeeded = response.status_code == status.HTTP_200_OK
            return response
        finally:
            guard.settle(succeeded=succeeded)


def admin_login_guarded(login_view):
    """The Django admin's sign-in behind the API's guards: the same per-address rate, lockout and
    per-username rate, answered 429 with Retry-After before any password is hashed."""
    from django.http import HttpResponse

    def guarded(request, *args, **kwargs):
        if request.method != "POST":
            return login_view(request, *args, **kwargs)
        username = request.POST.get("username") or ""
        throttle = LoginAddressThrottle()
        if not throttle.allow_request(_ThrottleProbe(request), None):
            return _too_many(HttpResponse, throttle.wait())
        if not username or len(username) > User._meta.get_field("username").max_length:
            return login_view(request, *args, **kwargs)  # the form refuses it: no password is checked
        guard = SignInGuard(request, username, request.META.get("REMOTE_ADDR", ""))
        refused = guard.refusal()
        if refused is not None:
            return _too_many(HttpResponse, refused[1])
        succeeded = False
        try:
            response = login_view(request, *args, **kwargs)
            succeeded = bool(request.user.is_authenticated and request.user.get_username() == username)
            return response
        finally:
            guard.settle(succeeded=succeeded)

    return guarded


class _ThrottleProbe:
    """What the DRF throttles read of a request (its address and user), for a plain Django view."""

    def __init__(self, request):
        self.META, self.headers, self.user = request.META, request.headers, request.user


def _too_many(response_class, wait) -> object:
    response = response_class("Too many sign-in attempts; try again later.", status=429, content_type="text/plain")
    response["Retry-After"] = str(max(1, math.ceil(wait or 60)))
    return response


class RefreshView(TokenRefreshView):
    """`POST /api/auth/token/refresh/`: `{access, refresh}`; the refresh token sent is used up."""

    throttle_classes = [LoginAddressThrottle]


# --- the unit admin's users ------------------------------------------------------------------------


class UserAdminSerializer(serializers.ModelSerializer):
    locked_out = serializers.SerializerMethodField()
    signing_locked = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "role", "is_active", "locked_out", "signing_locked", "signing_locked_at"]
        read_only_fields = fields

    def get_signing_locked(self, user: User) -> bool:
        return user.signing_locked_at is not None

    def get_locked_out(self, user: User) -> bool:
        return user.username in self.context.get("locked", ())


class UnlockSigningSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class IsUnitAdmin(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.is_superuser or user.role == Role.ADMIN))


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The users of your unit, for its admins: who is locked out after failed sign-ins, and unlock."""

    serializer_class = UserAdminSerializer
    permission_classes = [IsUnitAdmin]
    pagination_class = None

    def get_queryset(self):
        user = self.request.user
        users = User.objects.order_by("username")
        return users if user.is_superuser else users.filter(unit_id=getattr(user, "unit_id", None))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "locked": locked_out_usernames()}

    @extend_schema(request=UnlockSigningSerializer, responses={200: UserAdminSerializer})
    @action(detail=True, methods=["post"])
    def unlock(self, request, pk=None):
        """Lift the user's sign-in lockout now."""
        user = self.get_object()
        data = UnlockSigningSerializer(data=request.data if isinstance(request.data, dict) else {})
        data.is_valid(raise_exception=True)
        user_unlock(user=user, actor=request.user, reason=data.validated_data["reason"])
        return Response(UserAdminSerializer(user, context={"locked": set()}).data)

    @extend_schema(request=UnlockSigningSerializer, responses={200: UserAdminSerializer})
    @action(detail=True, methods=["post"], url_path="unlock-signing")
    def unlock_signing(self, request, pk=None):
        """Lift the user's signing lock (after too many wrong signature passwords); audited."""
        data = UnlockSigningSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = signing_unlock(actor=request.user, user=self.get_object(), reason=data.validated_data["reason"])
        return Response(UserAdminSerializer(user, context=self.get_serializer_context()).data)
