"""Metrics of the audit trail's scheduled verification, read at scrape time from its state table
(AuditVerification, written by the `records.audit_verify` beat task)."""

from __future__ import annotations

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .models import AuditVerification


class AuditCollector:
    def collect(self):
        ok = GaugeMetricFamily(
            "records_audit_chain_ok", "1 while the unit's audit trail passed its last verification, 0 once it failed",
            labels=["unit"],
        )
        states = list(AuditVerification.objects.values_list("unit_code", "ok", "checked_at"))
        for code, passed, _ in states:
            ok.add_metric([code], int(passed))
        yield ok
        if states:  # absent until the first run: the alert says so
            stalest = min(checked for _, _, checked in states)
            yield GaugeMetricFamily(
                "records_audit_last_verified_seconds",
                "Seconds since the least recently verified unit's audit trail was last verified",
                value=max(0.0, (timezone.now() - stalest).total_seconds()),
            )
