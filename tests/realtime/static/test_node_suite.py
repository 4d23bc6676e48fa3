"""The JavaScript client's unit tests (tests/realtime/static/*.test.mjs) run under Node's built-in
test runner; this makes them part of `make test`. Node is installed by scripts/ensure-node (which
`make test` runs): a missing Node fails here, it is never skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def test_node_test_suite_passes():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make node-deps` (scripts/ensure-node installs Debian's nodejs)")
    # given the client's unit tests, when Node's test runner runs them
    result = subprocess.run(
        [node, "--test", str(HERE.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )
    # then every test passed (the runner's summary names how many ran)
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, f"node --test failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert "# fail 0" in summary and any(line.startswith("# pass ") and line != "# pass 0" for line in summary), summary
