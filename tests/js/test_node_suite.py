"""The JavaScript client's unit tests (tests/js/*.test.mjs) run under Node's built-in test runner;
this makes them part of `make test`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JS client's unit tests (tests/js/) need Node 20+")
def test_node_test_suite_passes():
    # given the client's unit tests, when Node's test runner runs them
    result = subprocess.run(
        [NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    # then every test passed (the runner's summary names how many ran)
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, f"node --test failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert "# fail 0" in summary and any(line.startswith("# pass ") and line != "# pass 0" for line in summary), summary
