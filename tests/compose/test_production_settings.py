"""backend.config.settings.production, loaded as the containers load it: in a fresh process, from the
environment docker-compose.yml gives the services (rendered from compose/.env.example)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.support.deploy import COMPOSE, ROOT, rendered_compose

SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiNDIifQ.c2lnbmF0dXJlLXNlY3JldA"
SECRET_TICKET = "tkt_Zr8Qp1xV9sLmN3bC7dF2"


@pytest.fixture(scope="module")
def production_env() -> dict[str, str]:
    """The web service's environment as compose renders it (no database is contacted below)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update({k: str(v) for k, v in rendered_compose()["services"]["web"]["environment"].items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_check_deploy_is_clean(production_env):
    result = run_python("", production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize("variable", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"])
def test_production_settings_refuse_to_load_without(production_env, variable):
    env = {k: v for k, v in production_env.items() if k != variable}

    result = run_python("import django; django.setup()", env)

    assert result.returncode != 0
    assert f"Set the {variable} environment variable" in result.stderr


def test_secure_behind_the_tls_proxy(production_env):
    names = [
        "DEBUG", "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_REDIRECT_EXEMPT",
        "ALLOWED_HOSTS", "WHITENOISE_USE_FINDERS",
    ]
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )

    result = run_python(code, production_env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "DEBUG": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_REDIRECT_EXEMPT": ["^healthz$"],
        "ALLOWED_HOSTS": ["records.example.com", "localhost"],
        "WHITENOISE_USE_FINDERS": False,
    }


LOG_SCRIPT = f"""
import django, logging
django.setup()
log = logging.getLogger("daphne.access")
log.info("GET /ws/updates/?token=%s&last_seq=4 101", {SECRET_TOKEN!r})
logging.getLogger("realtime.auth").warning("handshake ticket=" + {SECRET_TICKET!r} + " refused")
logging.getLogger("backend.api").info("Authorization: Bearer %s", {SECRET_TOKEN!r})
try:
    raise ValueError("bad url /ws/updates/?ticket={SECRET_TICKET}")
except ValueError:
    logging.getLogger("backend.api").exception("handshake failed")
"""


def test_logs_are_json_lines_with_credentials_redacted(production_env):
    # when a process with production settings logs credentials, in the message, in its arguments
    # and in an exception
    result = run_python(LOG_SCRIPT, production_env)

    # then every line on stderr is one JSON object, and no secret is in any of them
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(r["level"], r["logger"]) for r in records] == [
        ("INFO", "daphne.access"), ("WARNING", "realtime.auth"), ("INFO", "backend.api"), ("ERROR", "backend.api"),
    ]
    assert records[0]["message"] == "GET /ws/updates/?token=[redacted]&last_seq=4 101"
    assert records[1]["message"] == "handshake ticket=[redacted] refused"
    assert records[2]["message"] == "Authorization: Bearer [redacted]"
    assert records[3]["message"] == "handshake failed"
    assert "ValueError: bad url /ws/updates/?ticket=[redacted]" in records[3]["exc"]
    assert SECRET_TOKEN not in result.stderr and SECRET_TICKET not in result.stderr
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)


def dockerfile_collectstatic() -> tuple[dict[str, str], list[str]]:
    """The Dockerfile's build-time collectstatic: (its environment, its command)."""
    text = re.sub(r"\\\n", " ", (COMPOSE / "Dockerfile").read_text())
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(line[4:])))
    run = next(line[4:] for line in text.splitlines() if line.startswith("RUN ") and "collectstatic" in line)
    words = shlex.split(run.split("&&")[0])
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def test_collectstatic_as_the_image_build_runs_it(tmp_path):
    # given the build step's own environment, collecting into a temporary STATIC_ROOT
    env, command = dockerfile_collectstatic()
    assert command == ["python", "manage.py", "collectstatic", "--noinput"]
    assert env["DJANGO_SETTINGS_MODULE"] == "backend.config.settings.production"
    env.update(PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/tmp"), STATIC_ROOT=str(tmp_path / "static"))

    # when it runs (no database exists at build time)
    result = run_python("", env, *command[1:])

    # then the admin, the API docs and the realtime client are collected, compressed beside
    assert result.returncode == 0, result.stdout + result.stderr
    static = tmp_path / "static"
    for path in ("admin/css/base.css", "realtime/updates-client.js", "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css"):
        assert (static / path).read_bytes() == gzip.decompress((static / f"{path}.gz").read_bytes()), path
