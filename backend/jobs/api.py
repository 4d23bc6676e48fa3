from __future__ import annotations

from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

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
        return jobs if user.is_superuser else jobs.filter(unit_id=user.unit_id)
