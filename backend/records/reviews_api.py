"""`/api/audit-reviews/`: sign off the unit's audit trail (EU GMP Annex 11 §9).

`POST {"through": "<ISO time>", "comment": "...", "signature": {"password", "meaning": "reviewed"}}`
by QA or a unit admin signs off the unit's entries up to `through` that no one else has reviewed yet;
the reviewer's own entries in the range stay unreviewed (four eyes). Entries show `reviewed` in the
trail (`GET /api/audit-trail/?reviewed=false`: what is waiting). Everything that can refuse a
review does so before the password is checked.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from backend.accounts.api import signature_throttle
from backend.accounts.signatures import signature_sign
from backend.audit.models import AuditReview
from backend.audit.reviews import ENTITY, reviews_visible_to

from .actions import REVIEW
from .api_common import SignatureInputSerializer
from .services.reviews import review_precheck, review_sign_off


class AuditReviewSerializer(serializers.ModelSerializer):
    unit = serializers.UUIDField(source="unit_id")
    reviewer = serializers.SerializerMethodField()

    class Meta:
        model = AuditReview
        fields = ["id", "unit", "from_position", "through_position", "through_at", "entries", "reviewer",
                  "signed_at", "comment"]
        read_only_fields = fields

    def get_reviewer(self, review: AuditReview) -> dict:
        return {"id": str(review.reviewer_id), "username": review.reviewer_username,
                "full_name": review.reviewer_full_name}


class ReviewInputSerializer(serializers.Serializer):
    through = serializers.DateTimeField(help_text="Sign off the entries up to this moment (inclusive)")
    comment = serializers.CharField(max_length=4000, allow_blank=True, help_text="What was checked and found: required")
    signature = SignatureInputSerializer(required=False, help_text=f"Your password and the meaning `{REVIEW.meaning}`")


@extend_schema_view(create=extend_schema(request=ReviewInputSerializer, responses={
    201: AuditReviewSerializer,
    400: OpenApiResponse(description="`comment_required`, `nothing_to_review`, `signature_required`, "
                         "`printed_name_required`, `invalid`"),
    403: OpenApiResponse(description="Not QA or a unit admin, or `signature_invalid`"),
    423: OpenApiResponse(description="`signature_locked`"),
}))
class AuditReviewViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                         viewsets.GenericViewSet):
    """Your unit's audit-trail reviews, newest first."""

    serializer_class = AuditReviewSerializer
    filter_backends: list = []

    def get_queryset(self):
        return reviews_visible_to(self.request.user)

    def create(self, request, *args, **kwargs):
        data = ReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        review_precheck(actor=request.user, comment=values["comment"], through=values["through"])
        signature_throttle(request, self)()
        given = values.get("signature") or {}
        signature = signature_sign(
            user=request.user, password=given.get("password"), meaning=given.get("meaning"), expected=REVIEW.meaning,
            action=REVIEW.name, entity=ENTITY, unit_id=request.user.unit_id,
        )
        review = review_sign_off(actor=request.user, through=values["through"], comment=values["comment"],
                                 signature=signature)
        return Response(AuditReviewSerializer(review).data, status=status.HTTP_201_CREATED)
