"""The benchmark's own meters (bench/realtime.py): CPU time read finer than /proc's 10 ms
ticks, and the client processes' scheduling policy, set in their own process only."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench.realtime import cpu_seconds

BUSY = (
    "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"
    "print('done', flush=True)\ntime.sleep(30)"
)


def test_cpu_seconds_reads_another_processes_cpu_time_below_a_clock_tick():
    proc = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=0.237)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "done"
        used = cpu_seconds([(SimpleNamespace(popen=proc), None)])
    finally:
        proc.kill()
        proc.wait()
    # the busy loop's 0.237 s plus the interpreter's start-up, read to well under a 10 ms tick
    assert 0.237 <= used < 1.5
    assert abs(used * 100 - round(used * 100)) > 1e-6  # not a whole number of 10 ms ticks (as psutil's would be)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
@pytest.mark.parametrize(("policy", "expected"), [("batch", "SCHED_BATCH"), ("normal", "SCHED_OTHER")])
def test_client_scheduling_sets_the_policy_of_its_own_process_only(policy, expected):
    # (and the client processes it spawns afterwards inherit it)
    code = (
        "import os, subprocess, sys\nfrom bench.realtime import client_scheduling\n"
        f"print(client_scheduling({policy!r}), os.sched_getscheduler(0))\n"
        "child = [sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))']\n"
        "print(subprocess.run(child, capture_output=True, text=True).stdout.strip())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))).stdout.split()
    assert out == [policy, str(getattr(os, expected)), str(getattr(os, expected))]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process is untouched
