"""Every entry point refuses to run without an explicit DJANGO_SETTINGS_MODULE: a deployment that
lost the variable must stop, not fall back to the development settings (DEBUG on, published secrets)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.common.entrypoint import MESSAGE

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

ENTRY_POINTS = {
    "manage.py": [sys.executable, "manage.py", "check"],
    "asgi": [sys.executable, "-c", "import backend.config.asgi"],
    "wsgi": [sys.executable, "-c", "import backend.config.wsgi"],
    "celery": [str(BIN / "celery"), "-A", "workers.celery", "report"],
    "relay": [sys.executable, "-m", "workers.relay"],
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_entry_point_refuses_without_a_settings_module(entry_point):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    result = subprocess.run(ENTRY_POINTS[entry_point], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert MESSAGE in result.stderr


def test_the_same_entry_point_starts_with_one():
    # (so the refusal above is about the variable, not a broken command)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "backend.config.settings.base"}

    result = subprocess.run(ENTRY_POINTS["manage.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
