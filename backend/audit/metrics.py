"""Metrics of the audit trail's scheduled verification, read at scrape time from its state table
(AuditVerification, written by the `records.audit_verify` beat task)."""

from __future__ import annotations

from django.db.models import Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .models import AuditCheckpoint, AuditEntry, AuditVerification
from .reviews import review_due


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

        # Checkpoint lag: per unit, how long its oldest entry no checkpoint has signed yet has
        # waited (0: the head is signed). The checkpoint task runs every AUDIT_CHECKPOINT_MINUTES;
        # a lag that keeps growing means it fails (the sink unwritable, the key missing) or does not
        # run, and until it runs a cut of those entries would go unnoticed.
        lag = GaugeMetricFamily(
            "records_audit_checkpoint_lag_seconds",
            "Seconds the unit's oldest audit entry not yet signed by a checkpoint has waited (0: none)",
            labels=["unit"],
        )
        now = timezone.now()
        units = AuditEntry._meta.get_field("unit").related_model.objects.values_list("id", "code").order_by("code")
        for unit_id, code in units:
            signed = (AuditCheckpoint.objects.filter(unit_id=unit_id).order_by("-position")
                      .values_list("position", flat=True).first()) or 0
            waiting_since = (AuditEntry.objects.filter(unit_id=unit_id, position__gt=signed).order_by("position")
                             .values_list("at", flat=True).first())
            lag.add_metric([code], max(0.0, (now - waiting_since).total_seconds()) if waiting_since else 0.0)
        yield lag

        # Audit-trail reviews (Annex 11 §9, backend/audit/reviews.py): per unit, whether its review
        # is overdue (an entry unreviewed for over AUDIT_REVIEW_DAYS) and how old its oldest
        # unreviewed entry is (0: none waiting).
        overdue = GaugeMetricFamily(
            "records_audit_review_overdue", "1 while the unit's audit-trail review is overdue (AUDIT_REVIEW_DAYS)",
            labels=["unit"],
        )
        waiting = GaugeMetricFamily(
            "records_audit_review_oldest_unreviewed_seconds",
            "Age of the unit's oldest audit entry no review has signed off (0: none)", labels=["unit"],
        )
        for unit_id, code in units:
            due = review_due(unit_id)
            overdue.add_metric([code], int(due.overdue(now)))
            age = (now - due.oldest_unreviewed_at).total_seconds() if due.oldest_unreviewed_at else 0.0
            waiting.add_metric([code], max(0.0, age))
        yield overdue
        yield waiting
