"""Metrics of the job pipeline, read from the Job table at scrape time."""

from __future__ import annotations

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from .models import Job


class JobsCollector:
    def collect(self):
        jobs = GaugeMetricFamily("records_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for row in Job.objects.values("kind", "status").annotate(n=Count("id")):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs
