"""Helpers for tests/compose: compose/ rendered by a real docker-compose, and its commands run here.

There is no Docker engine on the test machines. `docker-compose config` (Debian's docker-compose,
installed by scripts/ensure-deploy-tools) still parses, interpolates and schema-checks the file
offline; the commands it yields are then run as local processes, with production settings, against
the test database and the test Redis databases instead of the `postgres` and `redis` containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from backend.accounts.models import Role
from tests.support import processes
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

ROOT = processes.ROOT
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE / ".env.example"
NGINX_CONF = COMPOSE / "nginx" / "nginx.conf"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a required external tool; fails (never skips) with how to get it."""
    found = shutil.which(name) or shutil.which(name, path=f"{VENV_BIN}:/usr/sbin:/usr/bin")
    assert found, f"{name} is missing: run scripts/ensure-deploy-tools (make test does) or `make venv`"
    return found


def compose_config(env_file: Path = ENV_EXAMPLE, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker-compose --env-file ENV -f compose/docker-compose.yml config` (no daemon involved).
    Only the env file feeds the interpolation: the variables of the test run are kept out."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=COMPOSE, env=env, capture_output=True, text=True, timeout=60,
    )


def rendered_compose() -> dict[str, Any]:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def dockerfile_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command (exec form), e.g. ["python", "compose/healthcheck.py"]."""
    text = re.sub(r"\\\n", " ", (COMPOSE / "Dockerfile").read_text())
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK "))
    return json.loads(line.split(" CMD ", 1)[1])


def substitute(args: list[str], old: str, new: str) -> list[str]:
    """Replace `old` inside exactly one argument: a command that drifted from what the test knows
    fails loudly instead of running with a container-only value."""
    hits = [i for i, arg in enumerate(args) if old in arg]
    assert len(hits) == 1, f"{old!r} should appear in exactly one argument of {args}"
    return [arg.replace(old, new) if i == hits[0] else arg for i, arg in enumerate(args)]


def local_argv(command: list[str]) -> list[str]:
    """The container's command with its executable taken from this virtualenv (the image's is on
    PATH in /opt/venv/bin)."""
    executable = sys.executable if command[0] == "python" else str(VENV_BIN / command[0])
    assert Path(executable).exists(), f"{command[0]} is not installed in {VENV_BIN}"
    return [executable, *command[1:]]


def redis_role_urls() -> dict[str, str]:
    """The test run's Redis databases, in the names production settings read."""
    return {
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CHANNEL_LAYER_URL": settings.CHANNEL_LAYER_URL,
        "KEYS_REDIS_URL": settings.KEYS_REDIS_URL,
    }


def service_env(service: dict[str, Any], live_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The service's environment from the rendered compose file, with the addresses of the compose
    network (postgres, redis) swapped for the test database and Redis."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({k: "" if v is None else str(v) for k, v in service["environment"].items()})
    assert env["DJANGO_SETTINGS_MODULE"] == "backend.config.settings.production"
    env.update(
        PYTHONUNBUFFERED="1",
        DATABASE_URL=live_env["DATABASE_URL"],
        REDIS_URL=settings.REDIS_URL,
        **redis_role_urls(),
    )
    env.update(overrides)
    return env


def in_own_connection(function, *args, **kwargs):
    """Run a database-touching service in a worker thread, closing that thread's connection after."""
    try:
        return function(*args, **kwargs)
    finally:
        connection.close()


def make_approver(unit_code: str):
    """(unit, approver, store) of a new unit; the approver's password is one production settings can
    check (they lack the test run's MD5 hasher), so it can sign in over HTTP."""
    unit = UnitFactory(code=unit_code)
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "deploysalt0123456789", iterations=1000)
    approver = UserFactory(unit=unit, role=Role.APPROVER, password=hashed)
    store = UserFactory(unit=unit, role=Role.STORE)
    return unit, approver, store
