"""What the lists of crates and requests add for a working day (issue 32): a crate's reservation
(named in an open request) as a field and a filter, and requests found by the number of a crate they
name. The viewsets in api.py take these as bases, so the lists' own filters stay where they are."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import CrateStatus
from .selectors import crate_reserved_by


class CrateReservationFilter(django_filters.FilterSet):
    """`?reserved=true|false`: crates an open request names, or not. `?available=true`: what a new
    request may take now (in storage and named in no open request); `false`: everything else.
    The queryset must come from selectors.with_reservations."""

    reserved = django_filters.BooleanFilter(method="filter_reserved", label="Named in an open request")
    available = django_filters.BooleanFilter(
        method="filter_available", label="In storage and named in no open request: free for a new request"
    )

    def filter_reserved(self, queryset, name, value):
        return queryset.filter(reserved_by__isnull=not value)

    def filter_available(self, queryset, name, value):
        free = {"status": CrateStatus.IN_STORAGE, "reserved_by__isnull": True}
        return queryset.filter(**free) if value else queryset.exclude(**free)


class RequestCrateNumberFilter(django_filters.FilterSet):
    """`?crate_number=CR-2026-0042` (any case): the requests that name that crate."""

    crate_number = django_filters.CharFilter(
        field_name="crates__crate_number", lookup_expr="iexact", distinct=True,
        label="Requests naming the crate with this number (any case)",
    )


class CrateReservationFields(serializers.Serializer):
    """`reserved` and `reserved_by` of a crate (read from selectors.with_reservations when the
    queryset carries it, else looked up for the one crate)."""

    reserved = serializers.SerializerMethodField(
        help_text="Named in an open (pending or sent back) request: not free for another one",
    )
    reserved_by = serializers.SerializerMethodField(help_text="The number of that open request, or null")

    def _holder(self, crate) -> str | None:
        if not hasattr(crate, "reserved_by"):
            crate.reserved_by = crate_reserved_by(crate.id)
        return crate.reserved_by

    @extend_schema_field(serializers.BooleanField())
    def get_reserved(self, crate) -> bool:
        return self._holder(crate) is not None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_reserved_by(self, crate) -> str | None:
        return self._holder(crate)
