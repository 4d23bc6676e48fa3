"""Channel layer comparison on our fan-out path: `python -m bench.channel_layers`.

What the realtime tier asks of its channel layer is narrow (docs/realtime.md, "The hub"): one
receiving channel per Daphne process (the hub), joined to the `unit_<id>` groups of the units its
clients belong to, and `group_send` of one `unit.events` message per committed transaction (after
COMMIT, from workers). So this measures exactly that, for channels_redis.core.RedisChannelLayer and
channels_redis.pubsub.RedisPubSubChannelLayer, on a redis-server of its own (never a shared one):

- N receiver processes, each like a hub: `new_channel("hub.")`, `group_add` to U unit groups, then
  `receive()` in a loop, timing every message against the send time it carries;
- one sender: `group_send` of realistic `unit.events` messages (one ~250-byte frame each) to the
  unit groups in turn,
  - throughput: as fast as one sending coroutine can go, for --seconds: deliveries/s = messages
    received by all receivers / time from first send to last receipt (and how many never arrived:
    the core layer drops group messages beyond a channel's `capacity`);
  - latency: at a steady --rate messages/s for --seconds: send-to-receive p50 / p99 / max.

Usage: python -m bench.channel_layers [--receivers 1 4 8] [--units 10] [--seconds 5] [--rate 500]
Prints a table and writes bench-results/channel-layers-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
# One data_update frame as the outbox stores it (identifiers and status only).
FRAME = json.dumps(
    {
        "type": "data_update", "entity": "withdrawal", "action": "updated",
        "data": {"id": "0b6f7c1e-7d43-4a57-9a51-7c1f0c7f5e11", "status": "approved", "request_number": "WR-2026-0001"},
        "timestamp": "2026-01-15T10:30:00.000Z", "seq": 42,
    },
    separators=(",", ":"),
)


def layer_config(backend: str, url: str) -> dict:
    """The settings' CHANNEL_LAYERS entry (backend/config/settings/base.py), pointed at `url`."""
    host = {
        "address": url, "max_connections": 10_000, "socket_timeout": None, "socket_connect_timeout": 5,
        "socket_keepalive": True, "health_check_interval": 30, "retry_on_timeout": True,
    }
    config = {"hosts": [host]}
    if backend == LAYERS["core"]:
        config.update(capacity=1500, expiry=60, group_expiry=86400)
    return {"BACKEND": backend, "CONFIG": config}


def make_layer(backend: str, url: str):
    from django.utils.module_loading import import_string

    entry = layer_config(backend, url)
    return import_string(entry["BACKEND"])(**entry["CONFIG"])


# --- receivers (one process each, like one Daphne's hub) --------------------------------------


def receiver(backend: str, url: str, units: list[str], ready, results) -> None:
    async def run():
        layer = make_layer(backend, url)
        channel = await layer.new_channel("hub.")
        for unit in [*units, "control"]:
            await layer.group_add(f"unit_{unit}" if unit != "control" else "bench_control", channel)
        ready.put(os.getpid())
        phases: dict[str, dict] = {}
        while True:
            message = await layer.receive(channel)
            now = time.time()
            if message["type"] == "bench.stop":
                break
            phase = phases.setdefault(message["phase"], {"latencies": [], "first": now, "last": now})
            phase["latencies"].append(now - message["sent"])
            phase["last"] = now
        results.put(phases)
        await layer.flush()

    asyncio.run(run())


# --- the sender -------------------------------------------------------------------------------


async def send_phase(layer, units: list[str], phase: str, seconds: float, rate: float | None) -> tuple[int, float]:
    """Send `unit.events` messages to the unit groups in turn for `seconds`: as fast as possible, or at
    `rate` per second. Returns (messages sent, start time)."""
    start = time.time()
    sent = 0
    while True:
        now = time.time()
        if now - start >= seconds:
            return sent, start
        if rate is not None:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
        unit = units[sent % len(units)]
        await layer.group_send(
            f"unit_{unit}",
            {"type": "unit.events", "unit_id": unit, "events": [[sent + 1, FRAME]], "phase": phase, "sent": time.time()},
        )
        sent += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_case(backend_name: str, receivers: int, units: int, seconds: float, rate: float, url: str) -> dict:
    backend = LAYERS[backend_name]
    unit_ids = [f"bench{u}" for u in range(units)]
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=receiver, args=(backend, url, unit_ids, ready, results)) for _ in range(receivers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)

    async def drive():
        layer = make_layer(backend, url)
        await asyncio.sleep(0.5)  # subscriptions settle
        sent_tp, start_tp = await send_phase(layer, unit_ids, "throughput", seconds, None)
        await asyncio.sleep(2.0)  # let receivers drain before the latency phase
        sent_lat, _ = await send_phase(layer, unit_ids, "latency", seconds, rate)
        await asyncio.sleep(2.0)
        await layer.group_send("bench_control", {"type": "bench.stop"})
        await layer.flush()
        return sent_tp, start_tp, sent_lat

    sent_tp, start_tp, sent_lat = asyncio.run(drive())
    phases = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)

    tp = [p.get("throughput", {"latencies": [], "last": start_tp}) for p in phases]
    lat = [p.get("latency", {"latencies": []}) for p in phases]
    delivered_tp = sum(len(p["latencies"]) for p in tp)
    elapsed = max(p["last"] for p in tp) - start_tp
    latencies = [x for p in lat for x in p["latencies"]]
    return {
        "layer": backend_name,
        "receivers": receivers,
        "units": units,
        "throughput": {
            "sent": sent_tp,
            "expected_deliveries": sent_tp * receivers,
            "delivered": delivered_tp,
            "sends_per_s": round(sent_tp / seconds),
            "deliveries_per_s": round(delivered_tp / elapsed) if elapsed > 0 else None,
            "p99_ms": round(percentile([x for p in tp for x in p["latencies"]], 0.99) * 1000, 2),
        },
        "latency": {
            "rate": rate,
            "sent": sent_lat,
            "delivered": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        },
    }


# --- a redis-server of our own --------------------------------------------------------------------


def start_redis() -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.channel_layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, nargs="+", default=[1, 4, 8], help="hub processes")
    parser.add_argument("--units", type=int, default=10, help="unit groups every hub joins")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s in the latency phase")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    args = parser.parse_args(argv)

    redis_proc, port = start_redis()
    url = f"redis://127.0.0.1:{port}/1"
    cases = []
    try:
        for receivers in args.receivers:
            for layer in args.layers:
                case = run_case(layer, receivers, args.units, args.seconds, args.rate, url)
                cases.append(case)
                tp, lat = case["throughput"], case["latency"]
                print(
                    f"{layer:7} receivers={receivers:<2} | throughput: {tp['sends_per_s']:>6} sends/s, "
                    f"{tp['deliveries_per_s']:>7} deliveries/s, delivered {tp['delivered']}/{tp['expected_deliveries']}"
                    f" | at {lat['rate']:.0f}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms,"
                    f" delivered {lat['delivered']}/{lat['sent'] * receivers}",
                    flush=True,
                )
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"channel-layers-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_avg": os.getloadavg()},
        "versions": {name: metadata.version(name) for name in ("channels", "channels-redis", "redis")},
        "args": vars(args),
        "cases": cases,
    }, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
