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

from tests.support.deploy import COMPOSE, ENV_EXAMPLE, ROOT, rendered_compose

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
    # nothing silenced (the lockout is per username and address, which is what axes.W006 asks for)
    assert "System check identified no issues (0 silenced)." in result.stdout
    silenced = run_python(
        "import django; django.setup(); from django.conf import settings; print(settings.SILENCED_SYSTEM_CHECKS)",
        production_env,
    )
    assert silenced.stdout.strip() == "[]", silenced.stderr


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY is not set: set it in the environment"),
        ("JWT_SIGNING_KEY", "JWT_SIGNING_KEY is not set: set it in the environment"),
        ("METRICS_TOKEN", "METRICS_TOKEN is not set: set it in the environment"),
        ("AUDIT_CHECKPOINT_KEY", "AUDIT_CHECKPOINT_KEY is not set: set it in the environment"),
        ("ALLOWED_HOSTS", "Set the ALLOWED_HOSTS environment variable"),
        ("DATABASE_URL", "Set the DATABASE_URL environment variable"),
    ],
)
def test_production_settings_refuse_to_load_without(production_env, variable, message):
    env = {k: v for k, v in production_env.items() if k != variable}

    result = run_python("import django; django.setup()", env)

    assert result.returncode != 0
    assert message in result.stderr


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
        "SECURE_REDIRECT_EXEMPT": ["^healthz$", "^metrics$"],
        "ALLOWED_HOSTS": ["records.example.com", "localhost", "web"],
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
    # (the base settings: production refuses to load without the secrets a build does not have)
    assert env["DJANGO_SETTINGS_MODULE"] == "backend.config.settings.base"
    assert not any(key in env for key in ("SECRET_KEY", "JWT_SIGNING_KEY", "METRICS_TOKEN", "FLOWER_BASIC_AUTH"))
    env.update(PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/tmp"), STATIC_ROOT=str(tmp_path / "static"))

    # when it runs (no database exists at build time)
    result = run_python("", env, *command[1:])

    # then the admin, the API docs and the realtime client are collected, compressed beside
    assert result.returncode == 0, result.stdout + result.stderr
    static = tmp_path / "static"
    for path in ("admin/css/base.css", "realtime/updates-client.js", "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css"):
        assert (static / path).read_bytes() == gzip.decompress((static / f"{path}.gz").read_bytes()), path


def test_the_build_collects_what_production_serves(production_env):
    # collectstatic at build time uses the base settings: that is sound only while production
    # takes the installed apps and the storages from them unchanged
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.INSTALLED_APPS, settings.STORAGES, settings.STATIC_URL]))"
    )
    base_env = {k: v for k, v in production_env.items() if k in ("PATH", "HOME", "LANG", "STATIC_ROOT")}

    production = run_python(code, production_env)
    base = run_python(code, {**base_env, "DJANGO_SETTINGS_MODULE": "backend.config.settings.base"})

    assert production.returncode == 0 and base.returncode == 0, production.stderr + base.stderr
    assert json.loads(production.stdout.splitlines()[-1]) == json.loads(base.stdout.splitlines()[-1])


# --- secrets: production refuses what this repository publishes -----------------------------------


def test_check_deploy_refuses_the_example_env_as_published():
    # given the web service's environment rendered from compose/.env.example untouched
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update({k: str(v) for k, v in rendered_compose(ENV_EXAMPLE)["services"]["web"]["environment"].items()})

    # when an operator runs the deployment check with it
    result = run_python("", env, "manage.py", "check", "--deploy")

    # then it refuses, naming the setting and how to make a secret
    assert result.returncode != 0
    assert "Refusing to start with unsafe production settings: SECRET_KEY is a published example value" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr


def example_value(variable: str) -> str:
    line = next(line for line in ENV_EXAMPLE.read_text().splitlines() if line.startswith(f"{variable}="))
    return line.split("=", 1)[1]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECRET_KEY", example_value("SECRET_KEY"), "SECRET_KEY is a published example value"),
        ("JWT_SIGNING_KEY", example_value("JWT_SIGNING_KEY"), "JWT_SIGNING_KEY is a published example value"),
        ("JWT_SIGNING_KEY", None, "JWT_SIGNING_KEY is not set"),
        ("JWT_SIGNING_KEY", "x7-short-key", "JWT_SIGNING_KEY is too short or too simple"),
        ("JWT_SIGNING_KEY", "a" * 80, "JWT_SIGNING_KEY is too short or too simple"),
        ("METRICS_TOKEN", example_value("METRICS_TOKEN"), "METRICS_TOKEN is a published example value"),
        ("METRICS_TOKEN", "", "METRICS_TOKEN is not set"),
        ("FLOWER_BASIC_AUTH", example_value("FLOWER_BASIC_AUTH"), "the password in FLOWER_BASIC_AUTH is a published"),
        ("FLOWER_BASIC_AUTH", "admin", "FLOWER_BASIC_AUTH must be user:password"),
        ("SECRET_KEY", "django-insecure-" + "q8Zr" * 16, "SECRET_KEY is a published example value"),
        ("FAULT_POINTS", "outbox.publish=raise", "FAULT_POINTS is a test switch"),
        ("AUDIT_CHECKPOINT_KEY", example_value("AUDIT_CHECKPOINT_KEY"), "AUDIT_CHECKPOINT_KEY is a published example"),
        ("AUDIT_CHECKPOINT_KEY", "x7-short-key", "AUDIT_CHECKPOINT_KEY is too short or too simple"),
        ("AUDIT_CHECKPOINT_KEY", "/run/secrets/no-such-key.pem", "AUDIT_CHECKPOINT_KEY is not a usable Ed25519 key"),
    ],
)
def test_production_refuses_an_unsafe_secret_naming_it(production_env, variable, value, message):
    # given an otherwise deployable environment with one unsafe value
    env = {k: v for k, v in production_env.items() if k != variable}
    if value is not None:
        env[variable] = value

    # when a process loads the production settings
    result = run_python("import django; django.setup()", env)

    # then it does not start, and says which setting is wrong
    assert result.returncode != 0
    assert "ImproperlyConfigured: Refusing to start with unsafe production settings: " + message in result.stderr


def test_the_signing_key_must_differ_from_the_secret_key(production_env):
    env = {**production_env, "JWT_SIGNING_KEY": production_env["SECRET_KEY"]}

    result = run_python("import django; django.setup()", env)

    assert result.returncode != 0
    assert "JWT_SIGNING_KEY must differ from SECRET_KEY" in result.stderr


def test_every_published_placeholder_is_known_to_the_refusal():
    # every secret-looking value the repository publishes (example envs, settings defaults) is in
    # KNOWN_VALUES or carries the "change-me" marker the refusal recognises
    from backend.common.secrets import KNOWN_VALUES

    published = {}
    for path in (ENV_EXAMPLE, ROOT / ".env.example"):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#") and re.search(r"KEY|TOKEN|PASSWORD|SECRET|AUTH", key) and value:
                published[f"{path.name}:{key}"] = value.split(":", 1)[-1] if key.endswith("BASIC_AUTH") else value
    core = (ROOT / "backend/config/settings/core.py").read_text()
    published["core.py:SECRET_KEY"] = re.search(r'"SECRET_KEY", default="([^"]+)"', core).group(1)

    assert published, "no secrets found: the scan is broken"
    unknown = {k: v for k, v in published.items() if v not in KNOWN_VALUES and "change-me" not in v.lower()}
    assert not unknown
