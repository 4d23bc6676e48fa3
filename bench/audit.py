"""The audit trail at scale: a unit with a million entries (and a second unit beside it), then what
users and inspectors do with it, timed through the real API views, with the query plans.

    python -m bench.audit [--entries 1000000] [--database-url ...]

Entries are written as the services write them (a real hash chain, bulk decisions sharing their
moment), straight into the table in batches: scene-setting for the reads, not a test of the
writer (the realtime bench's bulk phase measures that, with its audit entries).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    p.add_argument("--repeat", type=int, default=20, help="timed calls per query")
    p.add_argument("--units", type=int, default=50, help="units to checkpoint (the big and small ones, and more of 10 entries)")
    return p.parse_args(argv)


def prepare(args) -> None:
    from bench.realtime import django_bench_env, reset_stores

    env = {
        **django_bench_env("audit", args.database_url),
        # Checkpoints: a throwaway key, and a sink file of the bench's own.
        "AUDIT_CHECKPOINT_KEY": base64.b64encode(os.urandom(32)).decode(),
        "AUDIT_CHECKPOINT_SINK": f"file://{ROOT / 'var' / 'bench-audit-checkpoints.jsonl'}",
    }
    (ROOT / "var" / "bench-audit-checkpoints.jsonl").unlink(missing_ok=True)
    os.environ.update(env)
    reset_stores(env)


# The decisions a bench trail signs: action -> (the signature's action, its meaning).
SIGNED = {"approved": ("approve", "approved"), "rejected": ("reject", "rejected"), "sent_back": ("send_back", "returned")}


def seed(count: int) -> dict:
    """A unit of `count` entries: bulk decisions of 1-2,000 items sharing a moment (each signed decision
    with its signature, bindings and digests), ten people, every entity and action; and a second
    unit of count/10 beside it."""
    import random

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from backend.accounts.models import Role, Unit, User
    from backend.audit.chain import GENESIS, binding_hash, entry_hash, signature_digest
    from backend.audit.models import AuditEntry, Signature, SignedRecord

    call_command("migrate", verbosity=0)
    rng = random.Random(7)
    started = time.monotonic()
    units = [Unit.objects.create(code=code, name=code) for code in ("big", "small")]
    # Straight into the table (no `created` entries: this trail's positions are the bench's own).
    people = User.objects.bulk_create([User(username=f"big.person{i}", unit=units[0], role=Role.APPROVER) for i in range(10)])
    (admin,) = User.objects.bulk_create([User(username="big.admin", unit=units[0], role=Role.ADMIN)])
    records = [uuid.uuid4() for _ in range(max(count // 20, 1))]
    watched = records[len(records) // 2]
    actions = [("withdrawal", "approved"), ("destruction", "rejected"), ("crate", "relocated"), ("crate", "withdrawn"),
               ("transfer", "sent_back"), ("withdrawal", "created"), ("crate", "created")]
    start = datetime(2026, 1, 1, tzinfo=datetime.now().astimezone().tzinfo) - timedelta(days=365)
    last = {}
    def flush(signatures: list, bindings: list, entries: list) -> None:
        Signature.objects.bulk_create(signatures)  # (what the entries and bindings refer to, first)
        SignedRecord.objects.bulk_create(bindings)
        AuditEntry.objects.bulk_create(entries)
        for rows in (signatures, bindings, entries):
            rows.clear()

    for unit, total in ((units[0], count), (units[1], max(count // 10, 1))):
        position, prev, moment, batch, signatures, bindings = 0, GENESIS, start, [], [], []
        while position < total:
            group = min(rng.choice([1, 1, 1, 5, 50, 500, 2000]), total - position)
            moment += timedelta(seconds=rng.randint(1, 600))
            actor = rng.choice(people)
            entity, action = rng.choice(actions)
            # A decision is signed, once for the whole group (a bulk decision), bound to each request
            # it decided, as the services sign them; its entries carry the signature's digest.
            signature, decided = None, set()
            if action in SIGNED and group <= len(records) // 2:
                verb, meaning = SIGNED[action]
                signature = Signature(
                    id=uuid.uuid4(), unit_id=unit.id, signer_id=actor.id, signer_username=actor.username,
                    signer_full_name="", meaning=meaning, action=verb, entity=entity, signed_at=moment,
                    client_ip="10.0.0.1", user_agent="bench",
                )
                signatures.append(signature)
            for _ in range(group):
                position += 1
                record = watched if unit is units[0] and position % 997 == 0 else rng.choice(records)
                while signature is not None and record in decided:  # (one binding per record and signature)
                    record = rng.choice(records)
                row = AuditEntry(
                    id=uuid.uuid4(), unit_id=unit.id, position=position, at=moment, actor_id=actor.id,
                    actor_username=actor.username, actor_full_name="", actor_role=actor.role, entity=entity,
                    record_id=record, record_number=f"WR-2026-{position:07d}", action=action, version=2,
                    changes={"status": ["pending", action]}, reason="", job_id=None, client_ip="10.0.0.1",
                    user_agent="bench", seq=position, prev_hash=prev,
                )
                if signature is not None:
                    decided.add(record)
                    bound = SignedRecord(
                        id=uuid.uuid4(), signature_id=signature.id, entity=entity, record_id=record,
                        record_number=row.record_number, version=2,
                        binding=binding_hash(signature, entity=entity, record_id=record, version=2,
                                             content={"status": action}),
                    )
                    bindings.append(bound)
                    row.signature_id, row.signature_digest = signature.id, signature_digest(signature, bound)
                row.hash = prev = entry_hash(row)
                batch.append(row)
            if len(batch) >= 5000:
                flush(signatures, bindings, batch)
        flush(signatures, bindings, batch)
        last[unit.code] = moment
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_auditentry")
    return {"unit": units[0], "admin": admin, "actor": people[3], "record": watched, "middle": start + (last["big"] - start) / 2,
            "seconds": round(time.monotonic() - started, 1)}


def timed(call, repeat: int) -> dict:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 1),
            "max_ms": round(samples[-1], 1)}


def plan(queryset) -> str:
    from django.db import connection

    if connection.vendor != "postgresql":
        return queryset.explain()
    return queryset.explain(analyze=True, buffers=True)


def measure(world: dict, repeat: int) -> dict:
    from rest_framework.test import APIClient

    from backend.audit.selectors import audit_verify, entries_visible_to, record_history

    client = APIClient(HTTP_HOST="localhost")
    client.force_authenticate(world["admin"])
    first = client.get("/api/audit-trail/?page_size=50").json()
    assert len(first["results"]) == 50, first

    deep = {"url": "/api/audit-trail/?page_size=50"}

    def walk_pages(pages=20):
        url = "/api/audit-trail/?page_size=500"
        for _ in range(pages):
            url = client.get(url).json()["next"]
        deep["url"] = url

    walk_pages()  # a cursor 10,000 entries deep
    queries = {
        "first page (50)": "/api/audit-trail/?page_size=50",
        "a page 10,000 entries deep": deep["url"],
        "by actor": f"/api/audit-trail/?actor={world['actor'].username}&page_size=50",
        "by action": "/api/audit-trail/?action=rejected&page_size=50",
        "by entity": "/api/audit-trail/?entity=transfer&page_size=50",
        "by record": f"/api/audit-trail/?record={world['record']}&page_size=50",
        "until the middle of the year": f"/api/audit-trail/?until={quote(world['middle'].isoformat())}&page_size=50",
        "a week in the middle": (
            f"/api/audit-trail/?since={quote(world['middle'].isoformat())}"
            f"&until={quote((world['middle'] + timedelta(days=7)).isoformat())}&page_size=50"
        ),
    }
    api = {}
    for name, url in queries.items():
        response = client.get(url)
        assert response.status_code == 200, (name, response.content[:300])
        api[name] = {**timed(lambda url=url: client.get(url), repeat), "rows": len(response.json()["results"])}

    visible = entries_visible_to(world["admin"])
    newest = ("-at", "-position")  # the trail's order (AuditTrailViewSet.cursor_ordering)
    plans = {
        "first page": plan(visible.order_by(*newest)[:51]),
        "by actor": plan(visible.filter(actor_username=world["actor"].username).order_by(*newest)[:51]),
        "by action": plan(visible.filter(action="rejected").order_by(*newest)[:51]),
        "until the middle": plan(visible.filter(at__lt=world["middle"]).order_by(*newest)[:51]),
        "record history": plan(record_history(world["record"])[:51]),
    }
    began = time.perf_counter()
    verification = audit_verify([world["unit"].id])
    verify = {"entries": verification.entries, "ok": verification.ok, "seconds": round(time.perf_counter() - began, 1)}
    return {"api": api, "plans": plans, "verify": verify}


def append(unit_id, count: int) -> None:
    """`count` more entries at the head of the unit's chain, as the writer would link them."""
    from django.utils import timezone

    from backend.audit.chain import GENESIS, entry_hash
    from backend.audit.models import AuditEntry

    head = AuditEntry.objects.filter(unit_id=unit_id).order_by("-position").values_list("position", "hash").first()
    position, prev = head or (0, GENESIS)
    rows = []
    for _ in range(count):
        position += 1
        row = AuditEntry(
            id=uuid.uuid4(), unit_id=unit_id, position=position, at=timezone.now(), actor_username="bench",
            entity="crate", record_id=uuid.uuid4(), action="relocated", changes={}, seq=position, prev_hash=prev,
        )
        row.hash = prev = entry_hash(row)
        rows.append(row)
    AuditEntry.objects.bulk_create(rows, batch_size=5000)


def measure_checkpoints(world: dict, units: int, repeat: int) -> dict:
    """Signed checkpoints and verify with them: a checkpoint of every unit (`units` of them, the big
    and small ones included), an idle checkpoint run, one signature check, and verify in full and
    incrementally (from the last verified checkpoint) over the whole deployment."""
    from django.db import transaction

    from backend.accounts.models import Unit
    from backend.audit.checkpoints import checkpoints_write, payload
    from backend.audit.keys import public_keys, signature_valid
    from backend.audit.models import AuditCheckpoint
    from backend.audit.verify import audit_verify
    from backend.audit.watch import verification_compute, verification_record

    for i in range(max(units - Unit.objects.count(), 0)):
        append(Unit.objects.create(code=f"site{i:03d}", name=f"site {i}").id, 10)
    all_units = list(Unit.objects.values_list("id", flat=True))
    writes, idle = [], []
    for _ in range(repeat):
        for unit_id in all_units:  # (not timed) every head moves, as on a busy day
            append(unit_id, 1)
        began = time.perf_counter()
        written = checkpoints_write()
        writes.append(time.perf_counter() - began)
        assert len(written) == len(all_units)
        began = time.perf_counter()
        assert checkpoints_write() == []
        idle.append(time.perf_counter() - began)
    checkpoint = AuditCheckpoint.objects.first()
    key = public_keys()[checkpoint.key_id]
    began = time.perf_counter()
    for _ in range(2000):
        assert signature_valid(key, payload(checkpoint), checkpoint.signature)
    signature_us = (time.perf_counter() - began) / 2000 * 1e6

    began = time.perf_counter()
    full = audit_verify()
    full_seconds = time.perf_counter() - began
    assert full.ok, full.first_bad
    run = verification_compute(full=True)
    with transaction.atomic():
        verification_record(run)
    incremental = {}
    for new in (0, 1000, 10_000):
        append(world["unit"].id, new)
        checkpoints_write()
        began = time.perf_counter()
        run = verification_compute(full=False)
        seconds = time.perf_counter() - began
        assert all(u.ok for u in run.units) and not run.full
        with transaction.atomic():
            verification_record(run)
        incremental[new] = {"entries_read": sum(u.entries for u in run.units), "seconds": round(seconds, 3)}
    return {
        "units": len(all_units),
        "checkpoint_all_units_ms": {"p50": round(statistics.median(writes) * 1000, 1), "max": round(max(writes) * 1000, 1)},
        "checkpoint_per_unit_ms": round(statistics.median(writes) * 1000 / len(all_units), 2),
        "idle_run_ms": round(statistics.median(idle) * 1000, 1),
        "signature_check_us": round(signature_us, 1),
        "full_verify": {"entries": full.entries, "seconds": round(full_seconds, 1),
                        "seconds_per_million": round(full_seconds / full.entries * 1e6, 1), "sink": full.sink},
        "incremental_verify": incremental,
    }


def _rss_kib() -> int:
    """The process's resident memory now (not the high-water mark, which seeding has already set)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # (no /proc: the high-water mark is all there is)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_export(world: dict) -> dict:
    """GET /api/audit-trail/export/ of the big unit in both formats, through the real view, each
    chunk counted and dropped. A timed pass (wall time, rows/s, bytes, the process's resident memory
    sampled at every chunk), then a traced pass (tracemalloc: Python's allocations at their peak,
    after the first five pages and over the whole export: equal when memory is constant)."""
    import gc
    import resource
    import tracemalloc

    from django.http import StreamingHttpResponse
    from rest_framework.test import APIClient

    from backend.audit import export
    from backend.audit.models import AuditEntry

    client = APIClient(HTTP_HOST="localhost")
    client.force_authenticate(world["admin"])
    expected = AuditEntry.objects.filter(unit_id=world["unit"].id).count()
    results = {}
    for fmt in ("csv", "ndjson"):
        url = f"/api/audit-trail/export/?format={fmt}"
        gc.collect()
        rss_before, maxrss_before = _rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_peak, lines, size = rss_before, 0, 0
        began = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200 and isinstance(response, StreamingHttpResponse), response
        for chunk in response.streaming_content:
            size += len(chunk)
            lines += chunk.count(b"\n")
            rss_peak = max(rss_peak, _rss_kib())
        seconds = time.perf_counter() - began
        rows = lines - (1 if fmt == "csv" else 0)
        assert rows == expected, (fmt, rows, expected)

        gc.collect()
        tracemalloc.start()
        early_peak = 0
        for pages, _chunk in enumerate(client.get(url).streaming_content):
            if pages == 5:
                early_peak = tracemalloc.get_traced_memory()[1]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[fmt] = {
            "rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
            "bytes": size, "mib_per_s": round(size / seconds / 2**20, 1), "page": export.EXPORT_PAGE,
            "rss_growth_kib": rss_peak - rss_before,
            "maxrss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before,
            "traced_peak_first_5_pages_kib": early_peak // 1024, "traced_peak_kib": peak // 1024,
        }
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    prepare(args)
    print(f"bench audit: writing {args.entries:,} entries ...", flush=True)
    world = seed(args.entries)
    print(f"bench audit: seeded in {world['seconds']} s; measuring ...", flush=True)
    results = measure(world, args.repeat)
    print("bench audit: exporting (csv, ndjson) ...", flush=True)
    results["export"] = measure_export(world)
    print("bench audit: checkpoints and verify with them ...", flush=True)
    results["checkpoints"] = measure_checkpoints(world, args.units, min(args.repeat, 10))
    from django.db import connection

    report = {"entries": args.entries, "database": connection.vendor, "seed_seconds": world["seconds"], **results}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-audit-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    for name, plan_text in results["plans"].items():
        print(f"\n--- plan: {name}\n{plan_text}")
    print(f"\n{args.entries:,} entries in one unit ({connection.vendor}); API view latency over {args.repeat} calls:")
    width = max(len(n) for n in results["api"])
    for name, row in results["api"].items():
        timing = f"p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms  max {row['max_ms']} ms"
        print(f"  {name.ljust(width)}  {timing}  ({row['rows']} rows)")
    v = results["verify"]
    print(f"  verify_audit_trail: {v['entries']:,} entries in {v['seconds']} s (ok={v['ok']})")
    print("\nGET /api/audit-trail/export/ (streamed through the view, each chunk dropped):")
    for fmt, e in results["export"].items():
        print(
            f"  {fmt.ljust(6)}  {e['rows']:,} rows in {e['seconds']} s ({e['rows_per_s']:,} rows/s, "
            f"{e['bytes'] / 2**20:.1f} MiB, {e['mib_per_s']} MiB/s); resident memory +{e['rss_growth_kib']:,} KiB "
            f"(high-water +{e['maxrss_growth_kib']:,} KiB); Python's peak {e['traced_peak_first_5_pages_kib']:,} KiB "
            f"after 5 pages of {e['page']:,}, {e['traced_peak_kib']:,} KiB over all"
        )
    c = results["checkpoints"]
    print(f"\nSigned checkpoints, {c['units']} units:")
    print(f"  a checkpoint of every unit: p50 {c['checkpoint_all_units_ms']['p50']} ms, max "
          f"{c['checkpoint_all_units_ms']['max']} ms ({c['checkpoint_per_unit_ms']} ms a unit); a run with nothing to "
          f"sign {c['idle_run_ms']} ms; one signature check {c['signature_check_us']} µs")
    f = c["full_verify"]
    print(f"  full verify (entries, checkpoints, purges, sink {f['sink']}): {f['entries']:,} entries in {f['seconds']} s "
          f"= {f['seconds_per_million']} s per million")
    for new, row in c["incremental_verify"].items():
        print(f"  incremental verify after {new:,} new entries: {row['entries_read']:,} read in {row['seconds']} s")
    print(f"\nresults: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
