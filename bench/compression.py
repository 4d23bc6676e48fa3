"""permessage-deflate on our frames, in this process with autobahn's own compressor (what Daphne runs
with WS_DEFLATE): bytes on the wire for a 500-update batch frame and for one update, the CPU of
compressing one delivery, and the memory a connection's compressor holds.

    python -m bench.compression

The end-to-end effect on a running Daphne (server CPU per delivery, memory per connection) is
`python -m bench --deflate on|no_context_takeover|off` (docs/performance.md, "Compression").
"""

from __future__ import annotations

import json
import os
import resource
import time
import tracemalloc
import uuid
from datetime import UTC, datetime

from autobahn.websocket.compress_deflate import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)

CONFIGS = {
    "context takeover (autobahn's default: window 15, memLevel 8)": {},
    "no_context_takeover": {"no_context_takeover": True},
    "window 9, memLevel 1": {"window_bits": 9, "mem_level": 1},
}


def frames() -> tuple[list[str], str]:
    """Typical data_updates (each its own ids and seq), and a 500-update data_update_batch of them
    (the schema's encoder)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings.base")
    from backend.events import schema

    now = datetime.now(UTC)
    updates = [
        schema.encode(schema.data_update(
            entity="withdrawal", action="updated", timestamp=now, seq=1000 + i,
            data={"id": str(uuid.uuid4()), "status": "approved", "request_number": f"WR-2026-{i:04d}",
                  "actor": "north.approver"},
        ))
        for i in range(500)
    ]
    return updates, schema.data_update_batch_frame(updates)


def compressor(options: dict) -> PerMessageDeflate:
    offer = PerMessageDeflateOffer(accept_no_context_takeover=True, accept_max_window_bits=True)
    accept = PerMessageDeflateOfferAccept(offer, **options)
    return PerMessageDeflate.create_from_offer_accept(True, accept)


def compress(pmce: PerMessageDeflate, payload: bytes) -> bytes:
    pmce.start_compress_message()
    return pmce.compress_message_data(payload) + pmce.end_compress_message()


def main() -> None:
    texts, batch_text = frames()
    updates, batch = [t.encode() for t in texts], batch_text.encode()
    one = updates[0]
    results = {"update_bytes": len(one), "batch_bytes": len(batch), "configs": {}}
    for name, options in CONFIGS.items():
        pmce = compressor(options)
        first_batch = len(compress(pmce, batch))
        second_batch = len(compress(pmce, batch))
        # one connection's stream of different updates: the first, and the average after 100
        pmce = compressor(options)
        sizes = [len(compress(pmce, update)) for update in updates]
        n = 20_000
        pmce = compressor(options)
        started = time.process_time()
        for i in range(n):
            compress(pmce, updates[i % len(updates)])
        per_update_us = (time.process_time() - started) / n * 1e6
        # memory: 500 connections' compressors, each having sent one update (zlib allocates
        # through Python's raw allocator, which tracemalloc sees)
        tracemalloc.start()
        held = [compressor(options) for _ in range(500)]
        for pmce in held:
            compress(pmce, one)
        per_connection_kib = tracemalloc.get_traced_memory()[0] / 1024 / len(held)
        tracemalloc.stop()
        results["configs"][name] = {
            "batch_bytes": [first_batch, second_batch],
            "update_bytes_first_then_steady": [sizes[0], round(sum(sizes[100:]) / len(sizes[100:]))],
            "cpu_us_per_update": round(per_update_us, 1),
            "memory_kib_per_connection": round(per_connection_kib, 1),
        }
        del held
    print(json.dumps(results, indent=2))
    print(f"\none update: {len(one)} bytes; a 500-update batch frame: {len(batch):,} bytes uncompressed")
    for name, r in results["configs"].items():
        print(f"  {name}:\n    batch {r['batch_bytes'][0]:,} / {r['batch_bytes'][1]:,} bytes (first / next), "
              f"update {r['update_bytes_first_then_steady'][0]} -> {r['update_bytes_first_then_steady'][1]} bytes, "
              f"{r['cpu_us_per_update']} µs CPU per update per connection, "
              f"{r['memory_kib_per_connection']} KiB per connection")
    print(f"(maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)")


if __name__ == "__main__":
    main()
