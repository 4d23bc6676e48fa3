"""What the lists of crates and requests add for a working day (issue 32): a crate's reservation
(named in an open request) as a field and a filter, and requests found by the number of a crate they
name. The viewsets in api.py take these as bases, so the lists' own filters stay where they are."""

from __future__ import annotations

import operator
from functools import reduce

import django_filters
from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.filters import SearchFilter

from .models import CrateStatus
from .selectors import crates_reserved_by, reserved_crates


class CrateReservationFilter(django_filters.FilterSet):
    """`?reserved=true|false`: crates an open request names, or not. `?available=true`: what a new
    request may take now (in storage and named in no open request); `false`: everything else."""

    reserved = django_filters.BooleanFilter(method="filter_reserved", label="Named in an open request")
    available = django_filters.BooleanFilter(
        method="filter_available", label="In storage and named in no open request: free for a new request"
    )

    def filter_reserved(self, queryset, name, value):
        return queryset.filter(reserved_crates()) if value else queryset.exclude(reserved_crates())

    def filter_available(self, queryset, name, value):
        free = Q(status=CrateStatus.IN_STORAGE) & ~reserved_crates()
        return queryset.filter(free) if value else queryset.exclude(free)


class RequestCrateNumberFilter(django_filters.FilterSet):
    """`?crate_number=CR-2026-0042` (any case): the requests that name that crate."""

    crate_number = django_filters.CharFilter(
        method="filter_crate_number", label="Requests naming the crate with this number (any case)",
    )

    def filter_crate_number(self, queryset, name, value):
        model = queryset.model
        holders = model.crates.through.objects.filter(crate__crate_number__iexact=value.strip())
        return queryset.filter(id__in=holders.values(f"{model._meta.model_name}_id"))


class RequestSearchFilter(SearchFilter):
    """`?search=`: each term matches the request's own search fields (number, reason) or the number
    of one of its crates. The crates are matched by one uncorrelated subquery per term (read once,
    hashed), not a join: no duplicate rows to remove, no per-row lookup."""

    search_description = "Terms matched in the request's number and reason and in the numbers of its crates"

    def filter_queryset(self, request, queryset, view):
        fields = self.get_search_fields(view, request)
        terms = self.get_search_terms(request)
        if not fields or not terms:
            return queryset
        model = queryset.model
        owner = f"{model._meta.model_name}_id"
        lookups = [self.construct_search(str(field), queryset) for field in fields]
        for term in terms:
            own = reduce(operator.or_, (Q(**{lookup: term}) for lookup in lookups))
            holders = model.crates.through.objects.filter(crate__crate_number__icontains=term).values(owner)
            queryset = queryset.filter(own | Q(id__in=holders))
        return queryset


class CrateReservationList(serializers.ListSerializer):
    """Reads which crates of a whole page are reserved, and by what, in one query per request kind."""

    def to_representation(self, data):
        items = list(data.all() if hasattr(data, "all") else data)
        self.child._reserved_page = crates_reserved_by([crate.id for crate in items])
        return super().to_representation(items)


class CrateReservationFields(serializers.Serializer):
    """`reserved` and `reserved_by` of a crate (a list reads its page's at once: Meta's
    `list_serializer_class = CrateReservationList`; one crate alone is looked up)."""

    reserved = serializers.SerializerMethodField(
        help_text="Named in an open (pending or sent back) request: not free for another one",
    )
    reserved_by = serializers.SerializerMethodField(help_text="The number of that open request, or null")

    def _holder(self, crate) -> str | None:
        page = getattr(self, "_reserved_page", None)
        if isinstance(page, dict):
            return page.get(crate.id)
        return crates_reserved_by([crate.id]).get(crate.id)

    @extend_schema_field(serializers.BooleanField())
    def get_reserved(self, crate) -> bool:
        return self._holder(crate) is not None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_reserved_by(self, crate) -> str | None:
        return self._holder(crate)
