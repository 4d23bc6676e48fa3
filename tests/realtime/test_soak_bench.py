"""The soak benchmark's own arithmetic and set-up (bench/soak.py): it starts the Daphne the
Procfile starts, and its per-cycle figure is a least-squares slope over the rounds after the first."""

from __future__ import annotations

import sys

from bench.soak import grown_types, procfile_web_command, slope, summarize


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
