"""The soak benchmark's own arithmetic and set-up (bench/soak.py): it starts the Daphne the
Procfile starts, its per-cycle figure is a least-squares slope over the rounds after the first, its
verdict tells a leak from a flat but noisy RSS, and it names the allocation sites that grew between
two tracemalloc snapshots."""

from __future__ import annotations

import random
import sys
import tracemalloc

import pytest

from bench.soak import ROOT, grown_types, passed, procfile_web_command, slope, summarize, tracemalloc_growth


def test_the_daphne_is_started_with_the_procfiles_web_flags(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "web: scripts/respawn web -- python -m realtime.daphne -e tcp:port=${WEB_PORT:-8000}:interface=${BIND:-127.0.0.1}"
        ":backlog=${DAPHNE_BACKLOG:-4096} --ping-interval 20 -v 1 backend.config.asgi:application\n"
        "worker: scripts/respawn worker -- celery -A workers.celery worker\n"
    )
    assert procfile_web_command(8123, procfile) == [
        sys.executable, "-m", "realtime.daphne", "-e", "tcp:port=8123:interface=127.0.0.1:backlog=4096",
        "--ping-interval", "20", "-v", "1", "backend.config.asgi:application",
    ]
    # and the real Procfile's web line parses the same way
    real = procfile_web_command(8123)
    assert real[1:3] == ["-m", "realtime.daphne"] and "tcp:port=8123:interface=127.0.0.1:backlog=4096" in real


def _round(cycles: int, rss_mb: float, objects: int = 1000) -> dict:
    quiet = {"count": 0}
    return {"cycles": cycles, "rss_bytes": int(rss_mb * 2**20), "objects": objects,
            "loop_lateness_ms": {"count": 10, "p99": 5.0, "max": 9.0},
            "gc_pauses_ms": {"0": quiet, "1": quiet, "2": quiet}}


def test_kilobytes_per_cycle_are_the_slope_after_the_first_round():
    # given a first round that settles the process, then 1 KB per cycle
    rounds = [_round(1000, 100.0)] + [_round(1000 * n, 100.0 + (n - 1) * 1000 / 1024) for n in range(2, 7)]
    census = {"by_type": {"dict": 10}}
    summary = summarize(rounds, census, {"by_type": {"dict": 15, "list": 3}}, 1000)
    assert round(slope([(0, 0), (1, 2), (2, 4)]), 6) == 2.0
    assert summary["kb_per_cycle_after_first_round"] == 1.0
    assert summary["last_half"]["kb_per_cycle"] == 1.0
    assert summary["grown_types_first_to_last"] == [("dict", 5), ("list", 3)]
    assert grown_types({"by_type": {"a": 5}}, {"by_type": {"a": 4}}) == []


def _summary(rss_mb: list[float]) -> dict:
    rounds = [_round(1000 * (n + 1), mb) for n, mb in enumerate(rss_mb)]
    return summarize(rounds, {"by_type": {}}, {"by_type": {}}, 1000)


def test_a_leaking_series_meets_neither_the_target_nor_flatness():
    # given 2 KB kept per cycle (2 MB a round of 1,000) for 20 rounds, with the allocator's noise on top
    noise = random.Random(34)
    summary = _summary([140.0 + n * 2000 / 1024 + noise.uniform(-0.3, 0.3) for n in range(20)])

    # then it is judged leaking on both counts, and --strict fails it
    assert summary["kb_per_cycle_after_first_round"] == pytest.approx(2.0, abs=0.1)
    assert (summary["target_met"], summary["last_half_flat"], passed(summary)) == (False, False, False)


def test_a_slow_leak_under_the_target_is_still_not_flat_over_a_long_run():
    # given 0.4 KB per cycle (under the 0.5 KB target) for 100 rounds: 20 MB over the last half
    summary = _summary([140.0 + n * 400 / 1024 for n in range(100)])

    # then the target is met but the last half is not flat: its range is far over 2 MB
    assert (summary["target_met"], summary["last_half_flat"], passed(summary)) == (True, False, False)


def test_a_flat_but_noisy_series_passes():
    # given a first round that grows the process, then RSS that wanders +-0.8 MB around 140 MB
    noise = random.Random(7)
    summary = _summary([120.0] + [140.0 + noise.uniform(-0.8, 0.8) for _ in range(29)])

    # then it is flat within noise and meets the target
    assert summary["last_half_range_allowed_mb"] == 2.0
    assert (summary["target_met"], summary["last_half_flat"], passed(summary)) == (True, True, True)


def test_a_step_in_the_last_half_wider_than_the_noise_is_not_flat():
    # given a flat series except for one jump of 3 MB halfway through the last half (slope small)
    summary = _summary([140.0] * 15 + [140.0] * 7 + [143.0] * 8)

    assert summary["target_met"] is True and summary["last_half_flat"] is False


def test_too_few_rounds_are_not_judged_and_fail_strict():
    summary = _summary([140.0, 140.0])
    assert (summary["target_met"], summary["last_half_flat"], passed(summary)) == (None, None, False)


def test_a_daphne_tracing_its_allocations_is_judged_on_the_memory_traced():
    # given a run under --tracemalloc: the RSS grows 30 KB a cycle (the tracing's own tables and each
    # census's copy of every trace), the memory traced stays at 60 MB
    rounds = [_round(1000 * (n + 1), 400.0 + n * 30) for n in range(4)]
    for r in rounds:
        r.update(traced_bytes=60 * 2**20 + 1000, tracemalloc_bytes=200 * 2**20)
    summary = summarize(rounds, {"by_type": {}}, {"by_type": {}}, 1000)

    # then the verdict is on the memory traced, and says so
    assert (summary["judged_on"], summary["target_met"], summary["last_half_flat"]) == ("traced_bytes", True, True)
    assert summary["traced"] == {"mb_after_first_round": 60.0, "mb_at_end": 60.0, "kb_per_cycle_after_first_round": 0.0,
                                 "tracing_own_mb_at_end": 200.0}
    assert summary["kb_per_cycle_after_first_round"] == 30.72  # (the RSS, still reported)


def _snapshot(path, traces: list[tuple[str, int, int, int]]) -> str:
    """A tracemalloc snapshot of blocks [(file, line, size, how many)], each traced to one frame."""
    raw = [(0, size, ((filename, line),), 1) for filename, line, size, count in traces for _ in range(count)]
    tracemalloc.Snapshot(raw, 1).dump(str(path))
    return str(path)


def test_the_allocation_sites_that_grew_most_between_two_snapshots(tmp_path):
    # given a first snapshot and a later one in which three sites grew, one shrank and one is unchanged,
    # plus allocations of the tracing and the import system (which are not the server's)
    site_packages = "/venv/lib/python3.11/site-packages"
    first = _snapshot(tmp_path / "first", [
        (f"{site_packages}/autobahn/websocket/protocol.py", 100, 512, 10),
        (f"{site_packages}/twisted/internet/tcp.py", 200, 1024, 4),
        (f"{ROOT}/realtime/hub.py", 50, 256, 2),
        ("/usr/lib/python3.11/asyncio/events.py", 80, 1024, 8),
    ])
    last = _snapshot(tmp_path / "last", [
        (f"{site_packages}/autobahn/websocket/protocol.py", 100, 512, 10 + 2000),  # +1,000 KB
        (f"{site_packages}/twisted/internet/tcp.py", 200, 1024, 4 + 300),  # +300 KB
        (f"{ROOT}/realtime/hub.py", 50, 256, 2 + 4),  # +1 KB
        ("/usr/lib/python3.11/asyncio/events.py", 80, 1024, 2),  # shrank
        ("/usr/lib/python3.11/tracemalloc.py", 558, 1024, 5000),
        ("<frozen importlib._bootstrap_external>", 729, 1024, 5000),
    ])

    # then the growing sites come first, the largest growth first, with their growth in KB and blocks
    growth = tracemalloc_growth(first, last)
    assert [(g["site"], g["kb"], g["count"]) for g in growth] == [
        ("autobahn/websocket/protocol.py:100", 1000.0, 2000),
        ("twisted/internet/tcp.py:200", 300.0, 300),
        ("realtime/hub.py:50", 1.0, 4),
    ]
    assert growth[0]["kb_at_end"] == pytest.approx(1005.0)
    assert len(tracemalloc_growth(first, last, limit=2)) == 2
