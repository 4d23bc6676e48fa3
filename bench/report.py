"""Printed reports at scale: the PDF of a crate with 10 and with 10,000 history entries, its time,
size and memory (docs/audit.md, "Printed reports").

    python -m bench.report [--entries 10 10000] [--database-url ...]

The history is written straight into the audit table with a real hash chain (scene-setting, as
bench.audit does); the report is then printed through `report_print`, as the view does, into a
spooled file. Time is measured without tracing; memory twice: Python's peak allocations during the
print (tracemalloc) and the process's peak RSS growth across it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, nargs="+", default=[10, 10_000])
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    p.add_argument("--repeat", type=int, default=3)
    return p.parse_args(argv)


def prepare(args) -> None:
    from bench.realtime import django_bench_env, reset_stores

    env = django_bench_env("report", args.database_url)
    os.environ.update(env)
    reset_stores(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def crate_with_history(count: int):
    """A crate whose history is `count` entries (created, then relocations with reasons)."""
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    from backend.accounts.models import Role, Unit, User
    from backend.audit.chain import entry_hash
    from backend.audit.models import AuditEntry
    from backend.audit.services import chain_head
    from backend.events.services import unit_sequence_ensure
    from backend.records.models import Crate

    unit, _ = Unit.objects.get_or_create(code="bench", defaults={"name": "Bench archive", "timezone": "Europe/Zurich"})
    unit_sequence_ensure(unit.id)
    store, _ = User.objects.get_or_create(username="bench.store", defaults={
        "unit": unit, "role": Role.STORE, "first_name": "Stig", "last_name": "Store", "password": make_password("x")})
    crate = Crate.objects.create(unit=unit, crate_number=f"CR-BENCH-{count:06d}-{int(time.time())}",
                                 location=f"L{count - 1}", version=count)
    start = timezone.now() - timedelta(days=count)
    with transaction.atomic():
        position, prev = chain_head(unit.id)
        rows = []
        for i in range(count):
            position += 1
            row = AuditEntry(
                unit_id=unit.id, position=position, at=start + timedelta(minutes=i), actor_id=store.id,
                actor_username=store.username, actor_full_name="Stig Store", actor_role="store", entity="crate",
                record_id=crate.id, record_number=crate.crate_number,
                action="created" if i == 0 else "relocated", version=i + 1,
                changes={"location": [None if i == 0 else f"L{i - 1}", f"L{i}"]},
                reason="" if i == 0 else f"moved for inventory round {i}", prev_hash=prev,
            )
            row.hash = prev = entry_hash(row)
            rows.append(row)
        AuditEntry.objects.bulk_create(rows, batch_size=2000)
    return crate, store


def measure(count: int, repeat: int) -> dict:
    from backend.records.models import Crate
    from backend.records.reports import crate_subject, report_print

    crate, reader = crate_with_history(count)
    times, size, pages = [], 0, 0
    for _ in range(repeat):
        subject = crate_subject(Crate.objects.select_related("unit").get(id=crate.id))
        out = io.BytesIO()
        began = time.perf_counter()
        found = report_print(subject=subject, reader=reader, out=out)
        times.append(time.perf_counter() - began)
        size, pages = out.tell(), found["pages"]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    subject = crate_subject(Crate.objects.select_related("unit").get(id=crate.id))
    report_print(subject=subject, reader=reader, out=io.BytesIO())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "entries": count, "pages": pages, "bytes": size, "seconds_median": sorted(times)[len(times) // 2],
        "seconds_all": [round(t, 3) for t in times], "python_peak_mib": round(peak / 2**20, 1),
        "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    prepare(args)
    results = [measure(count, args.repeat) for count in sorted(args.entries)]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
