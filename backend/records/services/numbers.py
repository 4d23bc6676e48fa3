"""Human numbers (`WR-2026-0001`, `CR-2026-0001`): reserved under a locked counter, never reused."""

from __future__ import annotations

from django.utils import timezone

from ..models import NumberCounter


def reserve_numbers(scope: str, prefix: str, count: int = 1) -> tuple[int, int]:
    """Reserve `count` numbers for (scope, prefix, this year); returns (year, first number).

    The counter row lock serialises concurrent creates until COMMIT; a rolled-back create rolls the
    counter back with it, so no number that was ever visible is handed out twice.
    """
    year = timezone.now().year
    NumberCounter.objects.bulk_create([NumberCounter(scope=scope, prefix=prefix, year=year)], ignore_conflicts=True)
    counter = NumberCounter.objects.select_for_update().get(scope=scope, prefix=prefix, year=year)
    first = counter.last + 1
    counter.last += count
    counter.save(update_fields=["last"])
    return year, first


def next_number(scope: str, prefix: str) -> str:
    year, number = reserve_numbers(scope, prefix)
    return f"{prefix}-{year}-{number:04d}"
