"""Metrics of the audit trail's scheduled verification, read at scrape time from its state table
(AuditVerification, written by the `records.audit_verify` beat task)."""

from __future__ import annotations

from django.db.models import Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .models import AuditCheckpoint, AuditVerification


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
        # Before any run: unverified since the first checkpoint (0 while there is none to verify).
        if states:
            stalest = min(checked for _, _, checked in states)
        else:
            stalest = AuditCheckpoint.objects.aggregate(first=Min("at"))["first"] or timezone.now()
        yield GaugeMetricFamily(
            "records_audit_last_verified_seconds",
            "Seconds the least recently verified unit's audit trail has gone unverified",
            value=max(0.0, (timezone.now() - stalest).total_seconds()),
        )
