"""The one-way dependency rule (docs/architecture.md) is enforced by import-linter's contracts in
pyproject.toml: they hold on the tree, and they do catch a violation, even a lazy import inside a
function."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "4 kept, 0 broken" in result.stdout


def test_a_lazy_import_of_the_worker_from_the_domain_breaks_them(tmp_path):
    # given a copy of the tree in which a domain service imports the worker's app inside a function
    for name in ("backend", "workers", "realtime"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    planted = tmp_path / "backend" / "events" / "services.py"
    planted.write_text(planted.read_text() + "\n\ndef _planted():\n    from workers.celery import app\n\n    return app\n")

    # when the contracts are checked
    result = _lint(tmp_path)

    # then they fail, naming the import
    assert result.returncode == 1, result.stdout[-4000:]
    assert "BROKEN" in result.stdout
    assert "backend.events.services -> workers.celery" in result.stdout


def test_a_model_query_in_the_realtime_tier_breaks_them(tmp_path):
    # given a copy of the tree in which the realtime selectors query a domain model themselves
    for name in ("backend", "workers", "realtime"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    planted = tmp_path / "realtime" / "selectors.py"
    planted.write_text(
        planted.read_text() + "\n\ndef _planted():\n    from backend.records.models import Crate\n\n    return Crate\n"
    )

    # when the contracts are checked, then the realtime tier's rule fails, naming the import
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout[-4000:]
    assert "realtime.selectors -> backend.records.models" in result.stdout
