"""The production settings pass Django's deployment checklist with nothing but the required env."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _check_deploy(**overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="backend.config.settings.production",
        SECRET_KEY="".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*(-_=+)") for _ in range(50)),
        ALLOWED_HOSTS="example.com",
        # Production has no SQLite fallback; `check` does not connect, any PostgreSQL URL will do.
        DATABASE_URL="postgres://records@db.example.com:5432/records",
    )
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = _check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_on_a_weak_secret_key():
    # the same check notices a bad setting, so the pass above means something
    result = _check_deploy(SECRET_KEY="django-insecure-short")
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout
