from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Job


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()


class JobSerializer(serializers.ModelSerializer):
    progress = ProgressSerializer()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "result", "error", "targets", "requested_by",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobEnvelopeSerializer(serializers.Serializer):
    job = JobSerializer()


def job_accepted(job: Job) -> Response:
    """202 Accepted with the job and where to follow it (CONTRACT: State changes run as jobs)."""
    return Response(
        {"job": JobSerializer(job).data},
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/jobs/{job.id}/"},
    )


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of your unit. A job of another unit is a plain 404."""

    serializer_class = JobSerializer
    filterset_fields = ["status", "kind"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        user = self.request.user
        jobs = Job.objects.all()
        # getattr: an anonymous user (drf-spectacular's schema generation) sees nothing.
        return jobs if user.is_superuser else jobs.filter(unit_id=getattr(user, "unit_id", None))


class BulkActionSerializer(serializers.Serializer):
    entity = serializers.ChoiceField(choices=["withdrawal", "destruction", "transfer"])
    action = serializers.ChoiceField(choices=["approve", "reject", "send_back", "send-back", "resubmit"])
    ids = serializers.ListField(child=serializers.UUIDField(), allow_empty=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class BulkActionView(APIView):
    """Apply one action to many requests of your unit as one job; per-id outcomes in its result.

    Ids that do not exist or belong to another unit come back as `not_found` and are never touched.
    """

    @extend_schema(
        request=BulkActionSerializer,
        responses={
            202: JobEnvelopeSerializer,
            400: OpenApiResponse(description="Unknown entity/action, no ids, too many ids, missing reason"),
            403: OpenApiResponse(description="Your role does not allow this action"),
            503: OpenApiResponse(description="The job queue is unavailable; nothing was queued"),
        },
    )
    def post(self, request):
        from .bulk import bulk_submit

        data = BulkActionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = bulk_submit(actor=request.user, **data.validated_data)
        return job_accepted(job)
