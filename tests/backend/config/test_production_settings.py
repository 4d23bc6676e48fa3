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
    secret_names = ("SECRET_KEY", "JWT_SIGNING_KEY", "METRICS_TOKEN", "FLOWER_BASIC_AUTH", "FAULT_POINTS", "AUDIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ALLOWED_HOSTS", "DEBUG", *secret_names))}
    env.update(
        DJANGO_SETTINGS_MODULE="backend.config.settings.production",
        SECRET_KEY="".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*(-_=+)") for _ in range(50)),
        JWT_SIGNING_KEY=secrets.token_urlsafe(48),
        METRICS_TOKEN=secrets.token_urlsafe(32),
        AUDIT_CHECKPOINT_KEY=secrets.token_urlsafe(32),
        FLOWER_BASIC_AUTH="ops:" + secrets.token_urlsafe(24),
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
    # a weak key never reaches Django's own W009: the settings refuse it first, naming it
    result = _check_deploy(SECRET_KEY="django-insecure-short")
    assert result.returncode != 0
    assert "Refusing to start with unsafe production settings: SECRET_KEY" in result.stderr


def test_check_deploy_fails_on_what_djangos_checklist_catches():
    # the same check notices a bad setting, so the pass above means something
    result = _check_deploy(SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout


def test_production_hashes_passwords_with_argon2id_at_or_above_owasps_minimum():
    # Signatures re-check a password for every decision: Argon2id (issue 30), not a test hasher, with
    # PBKDF2 behind it so that older hashes still check (and are upgraded: tests/backend/accounts/test_hashing.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="backend.config.settings.production", SECRET_KEY=secrets.token_urlsafe(50),
               JWT_SIGNING_KEY=secrets.token_urlsafe(48), METRICS_TOKEN=secrets.token_urlsafe(32),
               AUDIT_CHECKPOINT_KEY=secrets.token_urlsafe(32),
               FLOWER_BASIC_AUTH="ops:" + secrets.token_urlsafe(24), ALLOWED_HOSTS="example.com",
               DATABASE_URL="postgres://records@db.example.com:5432/records")
    shown = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.contrib.auth.hashers import get_hasher, get_hashers; h = get_hasher(); "
         "print(h.algorithm, h.time_cost, h.memory_cost, h.parallelism, "
         "'pbkdf2_sha256' in [x.algorithm for x in get_hashers()])"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    algorithm, time_cost, memory_cost, parallelism, pbkdf2 = shown.stdout.strip().splitlines()[-1].split()
    assert algorithm == "argon2", shown.stdout + shown.stderr
    # OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1
    assert int(memory_cost) >= 19456 and int(time_cost) >= 2 and int(parallelism) >= 1
    assert pbkdf2 == "True"
