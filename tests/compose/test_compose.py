"""compose/ checked by real tools, without a Docker engine: docker-compose renders and schema-checks
docker-compose.yml, hadolint parses and lints the Dockerfile. The commands in the file are run for
real in test_commands.py and test_nginx.py."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess

import pytest

from backend.common.proxies import parse_networks
from bench.processes import procfile_web_command
from tests.support.deploy import (
    COMPOSE,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ROOT,
    compose_config,
    deployed_env_text,
    rendered_compose,
    tool,
)

APP_SERVICES = {"migrate", "static", "web", "worker", "relay", "beat", "flower"}
ONE_SHOT = {"migrate", "static"}
DOCKERFILE = COMPOSE / "Dockerfile"


def env_example() -> dict[str, str]:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


# --- docker-compose.yml -------------------------------------------------------------------------


def test_docker_compose_renders_the_file_with_the_example_env():
    # when docker-compose renders the file with compose/.env.example
    config = rendered_compose()

    # then it is valid and holds the whole system
    assert set(config["services"]) == APP_SERVICES | {"postgres", "redis", "nginx", "prometheus", "grafana"}
    assert set(config["volumes"]) == {"pgdata", "redisdata", "static", "flowerdata", "prometheusdata", "grafanadata",
                                      "appvar"}


def test_docker_compose_config_is_a_real_schema_check(tmp_path):
    # given a copy of the file with a key the compose schema does not know
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("  worker:\n", "  worker:\n    replicas_typo: 4\n", 1))
    # when docker-compose renders it
    result = subprocess.run(
        [tool("docker-compose"), "--env-file", str(ENV_EXAMPLE), "-f", str(broken), "config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    # then it refuses, naming the key: the validation above can fail
    assert result.returncode != 0
    assert "replicas_typo" in result.stderr


@pytest.mark.parametrize(
    "variable",
    [
        "SECRET_KEY", "ALLOWED_HOSTS", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "JWT_SIGNING_KEY", "METRICS_TOKEN",
        "GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD", "AUDIT_CHECKPOINT_KEY",
    ],
)
def test_compose_refuses_to_start_without_a_required_secret(tmp_path, variable):
    # given the example env without one required variable
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != variable))
    # when docker-compose renders the file
    result = compose_config(env_file)
    # then it stops with the message that says what to set
    assert result.returncode != 0
    assert variable in result.stderr and "compose/.env" in result.stderr


def test_every_variable_of_the_compose_file_is_in_the_env_example():
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    # COMPOSE_PROJECT_NAME is read by compose itself
    assert referenced | {"COMPOSE_PROJECT_NAME"} == set(env_example())


def test_scalable_services_have_no_fixed_name_and_no_host_port():
    services = rendered_compose()["services"]

    for name in ("web", "worker"):
        assert "container_name" not in services[name]
        assert "ports" not in services[name]
    # nginx is the only way in
    assert [name for name, service in services.items() if "ports" in service] == ["nginx"]
    assert services["nginx"]["ports"] == [{"published": 80, "target": 80}]


def test_services_start_in_order_on_health():
    services = rendered_compose()["services"]

    def depends(name: str) -> dict[str, str]:
        return {dep: cond["condition"] for dep, cond in services[name]["depends_on"].items()}

    assert depends("migrate") == {"postgres": "service_healthy"}
    for name in ("web", "worker", "relay", "beat"):
        assert depends(name) == {"migrate": "service_completed_successfully", "redis": "service_healthy"}
    assert depends("flower") == {"redis": "service_healthy"}
    assert depends("nginx") == {
        "web": "service_healthy", "flower": "service_started", "grafana": "service_started",
        "static": "service_completed_successfully",
    }
    assert depends("grafana") == {"prometheus": "service_started"}
    # Prometheus waits for nothing: it must be up to see the rest fail to start
    assert "depends_on" not in services["prometheus"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"


def test_redis_persists_to_a_volume_and_never_evicts_queued_tasks():
    redis = rendered_compose()["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["command"][redis["command"].index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["volumes"] == ["redisdata:/data:rw"]


def test_nginx_serves_the_static_volume_the_static_service_fills():
    services = rendered_compose()["services"]
    assert services["static"]["environment"]["STATIC_ROOT"] == "/srv/static"
    assert services["static"]["volumes"] == ["static:/srv/static:rw"]
    assert "static:/srv/static:ro" in services["nginx"]["volumes"]
    assert services["nginx"]["volumes"][0].endswith("compose/nginx/nginx.conf:/etc/nginx/nginx.conf:ro")


def test_every_app_service_runs_production_settings_from_the_same_image():
    services = rendered_compose()["services"]
    images = {services[name]["image"] for name in APP_SERVICES}

    assert images == {env_example()["APP_IMAGE"]}
    for name in APP_SERVICES:
        assert services[name]["environment"]["DJANGO_SETTINGS_MODULE"] == "backend.config.settings.production"
        assert services[name]["build"]["dockerfile"] == "compose/Dockerfile"


def test_web_runs_daphne_with_the_procfile_production_flags_on_all_interfaces():
    web = rendered_compose()["services"]["web"]["command"]

    assert web == procfile_web_command(PORT="8000", BIND="0.0.0.0", DAPHNE_BACKLOG="4096")
    assert web[:3] == ["python", "-m", "realtime.daphne"]
    assert "tcp:port=8000:interface=0.0.0.0:backlog=4096" in web
    # Daphne never believes X-Forwarded-For itself: the web tier trusts nginx alone (TRUSTED_PROXIES)
    assert "--proxy-headers" not in web


@pytest.mark.parametrize("network", [None, ("10.99.7.0/24", "10.99.7.33")], ids=["example", "another-subnet"])
def test_the_app_trusts_exactly_nginxs_fixed_address(network, tmp_path):
    # given compose/.env as the example has it, or with the subnet and nginx's address both changed
    text = deployed_env_text()
    if network is not None:
        subnet, address = network
        text = re.sub(r"(?m)^COMPOSE_SUBNET=.*$", f"COMPOSE_SUBNET={subnet}", text)
        text = re.sub(r"(?m)^NGINX_ADDRESS=.*$", f"NGINX_ADDRESS={address}", text)
    env_file = tmp_path / ".env"
    env_file.write_text(text)

    # when docker-compose renders the file
    services = rendered_compose(env_file)["services"]
    nginx_address = services["nginx"]["networks"]["default"]["ipv4_address"]
    subnet = rendered_compose(env_file)["networks"]["default"]["ipam"]["config"][0]["subnet"]

    # then every app service trusts nginx's fixed address, that one address alone, inside the subnet
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(subnet)
    for name in sorted(APP_SERVICES):
        trusted = services[name]["environment"].get("TRUSTED_PROXIES")
        assert trusted == nginx_address, (name, trusted, nginx_address)
        assert parse_networks(trusted.split(",")) == (ipaddress.ip_network(f"{nginx_address}/32"),)
    if network is not None:
        assert nginx_address == network[1]


def test_flower_is_served_under_its_prefix_with_basic_auth():
    flower = rendered_compose()["services"]["flower"]
    operator = dict(line.split("=", 1) for line in deployed_env_text().splitlines() if line and not line.startswith("#"))

    assert "--url_prefix=flower" in flower["command"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == operator["FLOWER_BASIC_AUTH"]


def test_flower_keeps_a_day_of_tasks_on_its_volume_and_make_up_does_the_same_in_var():
    flower = rendered_compose()["services"]["flower"]
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("flower:"))
    procfile = shlex.split(line[len("flower:"):])
    day = ["--persistent=True", "--state_save_interval=300000", "--max_tasks=30000"]

    # the state file on the flowerdata volume (saved every 5 minutes and at shutdown, reloaded at
    # start), at most 30,000 tasks in memory (docs/operations.md, "Flower")
    assert all(flag in flower["command"] for flag in day)
    assert "--db=/app/var/flower.db" in flower["command"]
    assert "flowerdata:/app/var:rw" in flower["volumes"]
    # `make up` keeps it in var/, with the same limits
    assert procfile[:3] == ["scripts/respawn", "flower", "--"]
    assert all(flag in procfile for flag in day) and "--db=var/flower.db" in procfile


# --- Dockerfile ---------------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_a_real_lint(tmp_path):
    # given a Dockerfile with an unpinned base image and an apt-get install left uncleaned
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60)
    # then hadolint fails it, so the test above can fail too
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged image


def test_dockerfile_is_multi_stage_non_root_with_static_files_and_a_health_check():
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    runtime = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1]:]
    runs = " ".join(args for op, args in runtime if op == "RUN")
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)

    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    # the venv is installed from the production lock file
    assert "requirements/prod.txt" in " ".join(a for op, a in instructions[: instructions.index(runtime[0])] if op == "RUN")
    # static files are collected at build time with the base settings (no secrets), then the user drops root
    assert re.search(r"DJANGO_SETTINGS_MODULE=backend\.config\.settings\.base\s+python manage\.py collectstatic --noinput", runs)
    user = [a for op, a in runtime if op == "USER"]
    assert len(user) == 1 and not user[0].startswith(("0", "root"))
    assert any(op == "HEALTHCHECK" and "compose/healthcheck.py" in a for op, a in runtime)


def test_dockerfile_default_command_is_the_web_service():
    cmd = next(args for op, args in dockerfile_instructions() if op == "CMD")
    assert json.loads(cmd) == rendered_compose()["services"]["web"]["command"]


def test_the_image_holds_every_package_the_processes_import():
    from django.conf import settings

    copied = {args.split()[0] for op, args in dockerfile_instructions() if op == "COPY" and "--from" not in args}
    local_packages = {
        name.split(".")[0]
        for name in [*settings.INSTALLED_APPS, settings.ROOT_URLCONF, settings.ASGI_APPLICATION, "workers.celery"]
        if (ROOT / name.split(".")[0]).is_dir()
    }

    assert local_packages == {"backend", "realtime", "workers"}
    assert local_packages | {"manage.py", "compose/healthcheck.py"} <= copied
    # and the build context lets them in (the ignore file is an allowlist)
    ignore = (COMPOSE / "Dockerfile.dockerignore").read_text().splitlines()
    for path in copied:
        assert f"!{path}/" in ignore or f"!{path}" in ignore, path


def test_the_image_installs_the_font_the_printable_reports_prefer():
    from backend.records import reports

    runtime = dockerfile_instructions()
    runtime = runtime[[i for i, (op, _) in enumerate(runtime) if op == "FROM"][-1]:]
    runs = " ".join(args for op, args in runtime if op == "RUN")
    regular, bold = reports._FONT_CANDIDATES[0]
    # the reports' first choice is Debian's fonts-dejavu-core (their fallback, Vera, has no Greek,
    # Cyrillic or arrows), and the runtime image installs exactly that package
    assert regular.startswith("/usr/share/fonts/truetype/dejavu/") and bold.startswith("/usr/share/fonts/truetype/dejavu/")
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bfonts-dejavu-core\b", runs)
