"""`make up` runs the Procfile with honcho, which sets PORT for every process (5000, 5100, ...):
the web process must listen where the README says, not where honcho's PORT points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.processes import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.integration


def test_honcho_starts_the_web_process_on_web_port_not_honchos_port(live_env):
    web_port, honcho_port = free_port(), free_port()
    env = {**live_env, "WEB_PORT": str(web_port), "PORT": str(honcho_port),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile", "web"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for_port(web_port, timeout=30)
        time.sleep(0.5)
        with pytest.raises(TimeoutError):
            wait_for_port(honcho_port, timeout=0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
