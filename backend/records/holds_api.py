"""`/api/legal-holds/`: place, list and release legal holds (backend.records.services.holds).

Placing and releasing are signed (meanings `hold` and `released`) by QA or a unit admin, with a
reason; both are synchronous (a hold must be in force when its 201 answers, not when a queue gets
to it). Everything else about a hold refuses before the password is checked, so a refused hold
costs its signer no signature attempt.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.accounts.api import signature_throttle
from backend.accounts.signatures import signature_sign
from backend.audit.models import Signature

from .actions import HOLD, RELEASE
from .api_common import SignatureInputSerializer
from .models import LegalHold
from .selectors import holds_visible_to
from .services.holds import ENTITY, hold_place, hold_precheck, hold_release, hold_release_check

ERRORS = {
    400: OpenApiResponse(description="`reason_required`, `crates_required`, `unknown_crate`, `signature_required`, "
                         "`printed_name_required`"),
    403: OpenApiResponse(description="Not QA or a unit admin, or `signature_invalid`"),
    404: OpenApiResponse(description="No such hold in your unit"),
    409: OpenApiResponse(description="`crate_unavailable` (a destroyed crate), `invalid_transition` (already released)"),
    423: OpenApiResponse(description="`signature_locked`"),
}


class LegalHoldSerializer(serializers.ModelSerializer):
    class Meta:
        model = LegalHold
        fields = ["id", "hold_number", "unit", "crates", "reason", "placed_by", "placed_at", "released_at",
                  "released_by", "release_reason", "version"]
        read_only_fields = fields


class HoldInputSerializer(serializers.Serializer):
    crates = serializers.ListField(child=serializers.UUIDField(), allow_empty=False, max_length=1000)
    reason = serializers.CharField(max_length=2000, allow_blank=True, help_text="Why: required, kept in the trail")
    signature = SignatureInputSerializer(required=False, help_text=f"Your password and the meaning `{HOLD.meaning}`")


class ReleaseInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, allow_blank=True, help_text="Why: required, kept in the trail")
    signature = SignatureInputSerializer(required=False, help_text=f"Your password and the meaning `{RELEASE.meaning}`")


def _sign(request, view, meaning: str, act: str, signature: dict) -> Signature:
    signature_throttle(request, view)()
    return signature_sign(
        user=request.user, password=signature.get("password"), meaning=signature.get("meaning"), expected=meaning,
        action=act, entity=ENTITY, unit_id=request.user.unit_id,
    )


@extend_schema_view(
    create=extend_schema(request=HoldInputSerializer, responses={201: LegalHoldSerializer, **ERRORS}),
)
class LegalHoldViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Your unit's legal holds, newest first. Crates under a hold that is not released show
    `on_hold: true` and are not destroyed, transferred or deleted."""

    serializer_class = LegalHoldSerializer
    filter_backends: list = []

    def get_queryset(self):
        holds = holds_visible_to(self.request.user)
        if self.request.query_params.get("active") in ("1", "true"):  # ?active=1: in force only
            holds = holds.filter(released_at__isnull=True)
        return holds

    def create(self, request, *args, **kwargs):
        data = HoldInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        hold_precheck(actor=request.user, reason=values["reason"], crate_ids=values["crates"])
        signature = _sign(request, self, HOLD.meaning, HOLD.name, values.get("signature") or {})
        hold = hold_place(actor=request.user, crate_ids=values["crates"], reason=values["reason"], signature=signature)
        return Response(LegalHoldSerializer(hold).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ReleaseInputSerializer, responses={200: LegalHoldSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        """Release the hold (signed, meaning `released`, with a reason): its crates may be
        destroyed again once no other hold names them."""
        hold = self.get_object()
        data = ReleaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data["reason"]
        hold_release_check(actor=request.user, hold=hold, reason=reason)
        signature = _sign(request, self, RELEASE.meaning, RELEASE.name, data.validated_data.get("signature") or {})
        hold = hold_release(actor=request.user, hold_id=hold.id, reason=reason, signature=signature)
        return Response(LegalHoldSerializer(hold).data)
