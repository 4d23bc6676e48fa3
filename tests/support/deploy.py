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
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from backend.accounts.models import Role
from bench import processes
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


# The operator's compose/.env: the example with every published placeholder ("change-me-...")
# replaced by a fresh random value, once per test run. Production settings refuse the placeholders.
_DEPLOYED_SECRETS: dict[str, str] = {}


def deployed_env_text(example: str | None = None) -> str:
    def fresh(match: re.Match) -> str:
        return _DEPLOYED_SECRETS.setdefault(match.group(0), secrets.token_urlsafe(48))

    return re.sub(r"change-me[\w-]*", fresh, ENV_EXAMPLE.read_text() if example is None else example)


def production_secrets() -> dict[str, str]:
    """Fresh secrets production settings accept, for a process started with them outside compose."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "JWT_SIGNING_KEY": secrets.token_urlsafe(48),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        "AUDIT_CHECKPOINT_KEY": secrets.token_urlsafe(32),
    }


def deployed_env_file() -> Path:
    """compose/.env as an operator writes it from the example (same values for the whole run)."""
    path = Path(tempfile.gettempdir()) / f"records-compose-{os.getpid()}.env"
    path.write_text(deployed_env_text())
    return path


def rendered_compose(env_file: Path | None = None) -> dict[str, Any]:
    """docker-compose.yml rendered with an operator's env file (the example's secrets replaced)."""
    result = compose_config(env_file or deployed_env_file())
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
    network (postgres, redis, nginx) swapped for the test database, Redis and the local nginx."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({k: "" if v is None else str(v) for k, v in service["environment"].items()})
    assert env["DJANGO_SETTINGS_MODULE"] == "backend.config.settings.production"
    env.update(
        PYTHONUNBUFFERED="1",
        DATABASE_URL=live_env["DATABASE_URL"],
        REDIS_URL=settings.REDIS_URL,
        **redis_role_urls(),
    )
    if env.get("TRUSTED_PROXIES"):  # nginx's fixed compose address -> the test's nginx, on this host
        env["TRUSTED_PROXIES"] = "127.0.0.1"
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


# --- nginx, promtool and PromQL (tests/compose/test_stack.py, test_monitoring.py) ------------------


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the file should contain {old!r} exactly once"
    return text.replace(old, new)


def nginx_check(conf: Path, prefix: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on `conf`; nginx's own files (pid) go under `prefix`. The files compose mounts
    beside nginx.conf (trusted-proxies.conf) are read from compose/nginx/, as the mounts place them."""
    text = conf.read_text()
    for mounted in ("trusted-proxies.conf",):
        text = text.replace(f"/etc/nginx/{mounted}", str(COMPOSE / "nginx" / mounted))
    checked = prefix / "nginx-checked.conf"
    checked.write_text(text)
    return subprocess.run(
        [tool("nginx"), "-t", "-p", str(prefix), "-c", str(checked), "-e", "stderr", "-g", f"pid {prefix}/nginx.pid;"],
        capture_output=True, text=True, timeout=30,
    )


def local_nginx(prefix: Path, port: int, upstreams: dict[str, str], static_root: Path, access_log: Path) -> list[str]:
    """compose/nginx/nginx.conf as a local nginx runs it: listening on 127.0.0.1:`port`, each compose
    upstream of `upstreams` ({"web:8000": "127.0.0.1:41234", ...}) pointed at a local process, the
    static volume at `static_root`, the access log in a file. Returns the argv (add "-t" to check)."""
    conf = NGINX_CONF.read_text()
    conf = replace_once(conf, "listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;")
    for compose_address, local_address in upstreams.items():
        conf = replace_once(conf, f"http://{compose_address};", f"http://{local_address};")
    conf = replace_once(conf, "alias /srv/static/;", f"alias {static_root}/;")
    conf = replace_once(conf, "access_log /dev/stdout records;", f"access_log {access_log} records;")
    # the test client on 127.0.0.1 plays the TLS terminator; any other loopback address is a client
    (prefix / "trusted-proxies.conf").write_text((COMPOSE / "nginx" / "trusted-proxies.conf").read_text() + "127.0.0.1/32 1;\n")
    conf = replace_once(conf, "include /etc/nginx/trusted-proxies.conf;", f"include {prefix / 'trusted-proxies.conf'};")
    # nginx's compiled-in temp directories may not be writable here: keep them in the prefix
    temp = "".join(f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = replace_once(conf, "http {\n", "http {\n" + temp)
    (prefix / "nginx.conf").write_text(conf)
    # workers run as root only when we are root: pytest's temporary directories are private
    globals_ = f"daemon off; pid {prefix / 'nginx.pid'};" + (" user root;" if os.geteuid() == 0 else "")
    return [tool("nginx"), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", globals_]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Debian's promtool (the `prometheus` package, installed by scripts/ensure-deploy-tools)."""
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# Words of PromQL that are not metric names: aggregation modifiers, set and comparison operators,
# offsets, and the special values.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "atan2", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: every identifier that is not a function or an
    aggregation (followed by `(`), a keyword, a label (inside `{...}` or a `by (...)` list), a
    string, or a duration."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\boffset\s+-?\w+", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names
