"""Every command of compose/docker-compose.yml, run for real: the rendered file's command and
environment (production settings), with only the container addresses swapped for the test database,
the test Redis databases, free ports and temporary directories. nginx runs compose/nginx/nginx.conf
(a copy pointing at these processes) in front of the web and flower commands."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from unittest import mock

import httpx
import pytest

from backend.accounts.models import Role
from backend.events.models import OutboxEvent
from backend.jobs import registry
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_submit
from backend.records import services
from backend.records.models import RequestStatus
from bench import processes
from tests.support.deploy import (
    COMPOSE,
    NGINX_CONF,
    ROOT,
    dockerfile_healthcheck,
    in_own_connection,
    local_argv,
    local_nginx,
    make_approver,
    nginx_check,
    rendered_compose,
    service_env,
    substitute,
)
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.realtime import hub_filled
from tests.support.signing import sign
from tests.support.ws import connect, recv_json, recv_until
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOST = "localhost"  # a name in the example ALLOWED_HOSTS
HTTPS = {"Host": HOST, "X-Forwarded-Proto": "https"}  # what the TLS terminator in front of nginx sends
# hub_filled waits for a report of the web process made after it was called: REALTIME_REPORT_SECONDS
# (2 s, unset in the compose file) and a margin.
REPORT_SETTLE = 3.0


@pytest.fixture(scope="module")
def compose() -> dict:
    return rendered_compose()["services"]


def run_once(compose: dict, name: str, live_env: dict, **overrides: str) -> subprocess.CompletedProcess:
    """A one-shot service: its command, to completion."""
    return subprocess.run(
        local_argv(compose[name]["command"]), cwd=ROOT, env=service_env(compose[name], live_env, **overrides),
        capture_output=True, text=True, timeout=180,
    )


@pytest.fixture(scope="module")
def static_root(compose, live_env, tmp_path_factory) -> Path:
    """The `static` service, collecting into a temporary directory instead of the volume."""
    root = tmp_path_factory.mktemp("static-volume")
    result = run_once(compose, "static", live_env, STATIC_ROOT=str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    return root


@pytest.fixture(scope="module")
def web(compose, live_env, static_root):
    """The `web` service: (process, port). STATIC_ROOT stands in for the image's build-time collection."""
    port = processes.free_port()
    command = substitute(compose["web"]["command"], "port=8000", f"port={port}")
    command = substitute(command, "interface=0.0.0.0", "interface=127.0.0.1")
    proc = processes.LiveProcess(
        "compose-web", local_argv(command), service_env(compose["web"], live_env, STATIC_ROOT=str(static_root))
    )
    processes.wait_for_port(port, timeout=60, proc=proc)
    yield proc, port
    proc.stop()


@pytest.fixture(scope="module")
def flower(compose, live_env, tmp_path_factory):
    port = processes.free_port()
    command = substitute(compose["flower"]["command"], "--address=0.0.0.0", "--address=127.0.0.1")
    command = substitute(command, "--port=5555", f"--port={port}")
    # its state file in a temporary directory instead of the flowerdata volume
    command = substitute(command, "--db=/app/var/flower.db", f"--db={tmp_path_factory.mktemp('flowerdata') / 'flower.db'}")
    proc = processes.LiveProcess("compose-flower", local_argv(command), service_env(compose["flower"], live_env))
    processes.wait_for_port(port, timeout=60, proc=proc)
    yield proc, port
    proc.stop()


@pytest.fixture(scope="module")
def nginx(web, flower, static_root, tmp_path_factory):
    """compose/nginx/nginx.conf, with the compose network's addresses pointed at the processes above.
    Yields (process, port, access log path)."""
    prefix = tmp_path_factory.mktemp("nginx")
    port = processes.free_port()
    access_log = prefix / "access.log"
    upstreams = {"web:8000": f"127.0.0.1:{web[1]}", "flower:5555": f"127.0.0.1:{flower[1]}"}
    args = local_nginx(prefix, port, upstreams, static_root, access_log)

    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = processes.LiveProcess("compose-nginx", args, {"PATH": os.environ["PATH"]})
    processes.wait_for_port(port, proc=proc)
    yield proc, port, access_log
    proc.stop()


# --- one-shot services --------------------------------------------------------------------------


def test_migrate_service_applies_migrations(compose, live_env):
    result = run_once(compose, "migrate", live_env)

    assert result.returncode == 0, result.stdout + result.stderr
    # the test database is already migrated: the command ran and found nothing left to do
    assert "No migrations to apply." in result.stdout


def test_static_service_collects_compressed_files_for_nginx(static_root):
    assert (static_root / "admin/css/base.css").is_file()
    assert (static_root / "admin/css/base.css.gz").is_file()
    assert (static_root / "realtime/updates-client.js").is_file()


# --- long-running services ----------------------------------------------------------------------


def test_web_service_passes_the_image_health_check(compose, live_env, web):
    # given the web service, which keeps the image's HEALTHCHECK (compose sets none for it)
    _, port = web
    assert "healthcheck" not in compose["web"]
    check = local_argv(dockerfile_healthcheck())
    env = service_env(compose["web"], live_env, PORT=str(port))

    # when the check runs against it, and against a port where nothing listens
    healthy = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    down = subprocess.run(
        check, cwd=ROOT, env={**env, "PORT": str(processes.free_port())}, capture_output=True, text=True, timeout=30
    )

    # then it tells them apart

    assert healthy.returncode == 0, healthy.stderr
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_worker_service_runs_a_job_and_answers_its_health_check(compose, live_env, tmp_path):
    # given the worker command, consuming a queue of this test's own (nothing else takes the job)
    queue = f"deploy-{uuid.uuid4().hex[:10]}"
    command = substitute(compose["worker"]["command"], "default,bulk", queue)
    env = service_env(compose["worker"], live_env)
    worker = processes.LiveProcess("compose-worker", local_argv(command), env)
    try:
        worker.wait_for_output("ready.", timeout=60)
        unit, approver, _ = make_approver("deploywk")
        request = make_request("withdrawal", UserFactory(unit=unit, role=Role.REQUESTER), [CrateFactory(unit=unit)])

        # when a job is queued for it
        send_task = celery_app.send_task
        with mock.patch.object(celery_app, "send_task", lambda *a, **kw: send_task(*a, queue=queue, **kw)):
            job = job_submit(actor=approver, kind=registry.get("withdrawal.approve"), targets=[request.id],
                             params={"signature_id": str(sign(approver, "withdrawal", "approve")),
                                     "versions": {str(request.id): request.version}})
        deadline = time.monotonic() + 30
        while Job.objects.get(id=job.id).status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.2)

        # and the compose health check asks the worker for a ping (%h is the hostname)
        check = compose["worker"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        # `config` keeps compose's $$ escape; the container's shell gets a single $
        shell_line = check[1].replace("$$", "$").replace("celery ", f"{local_argv(['celery'])[0]} ", 1)
        ping = subprocess.run(
            shell_line, shell=True, cwd=ROOT,
            env={**env, "HOSTNAME": socket.gethostname()}, capture_output=True, text=True, timeout=60,
        )
    finally:
        worker.stop()

    # then the job succeeded there, and the worker answered
    assert Job.objects.get(id=job.id).status == JobStatus.SUCCEEDED
    assert type(request).objects.get(id=request.id).status == RequestStatus.APPROVED
    # (its log lines are production's JSON, not Celery's own text format)
    succeeded = [line for line in worker.log_path.read_text().splitlines() if f"[{job.id}] succeeded" in line]
    assert len(succeeded) == 1 and json.loads(succeeded[0])["logger"] == "celery.app.trace"
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_beat_service_starts_with_its_schedule_where_the_path_says(compose, live_env, tmp_path):
    command = substitute(compose["beat"]["command"], "/app/var/", f"{tmp_path}/")
    beat = processes.LiveProcess("compose-beat", local_argv(command), service_env(compose["beat"], live_env))
    try:
        beat.wait_for_output("beat: Starting", timeout=60)
        deadline = time.monotonic() + 15
        while not list(tmp_path.glob("celerybeat-schedule*")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        beat.stop()
    assert list(tmp_path.glob("celerybeat-schedule*"))  # the schedule went where the volume-less path said


def test_relay_service_publishes_what_a_crash_left_unpublished(compose, live_env):
    # given an event that committed but was never published (its process died before publishing)
    unit = UnitFactory()
    with mock.patch("backend.events.services.outbox_publish"):
        crate = services.crate_create(actor=UserFactory(unit=unit, role=Role.STORE), location="A1")
    event = OutboxEvent.objects.get(object_id=crate.id)
    assert event.published_at is None

    # when the relay service's command runs, with the service's production environment
    command, env = local_argv(compose["relay"]["command"]), service_env(compose["relay"], live_env)
    relay = processes.LiveProcess("compose-relay", command, env)
    try:
        relay.wait_for_output("relay started", timeout=60)
        deadline = time.monotonic() + 30
        while OutboxEvent.objects.get(id=event.id).published_at is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        relay.stop()

    # then the relay published it
    assert OutboxEvent.objects.get(id=event.id).published_at is not None


def test_flower_service_behind_nginx_asks_for_basic_auth(compose, flower, nginx):
    _, nginx_port, _ = nginx
    user, password = compose["flower"]["environment"]["FLOWER_BASIC_AUTH"].split(":", 1)

    with httpx.Client(base_url=f"http://127.0.0.1:{nginx_port}", timeout=20) as http:
        anonymous = http.get("/flower/")
        wrong = http.get("/flower/", auth=(user, "wrong"))
        operator = http.get("/flower/", auth=(user, password))
    check = compose["flower"]["healthcheck"]["test"]
    health = subprocess.run(
        local_argv(substitute(check[1:], "127.0.0.1:5555", f"127.0.0.1:{flower[1]}")), cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )

    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert operator.status_code == 200 and "Flower" in operator.text
    assert health.returncode == 0, health.stderr


# --- nginx in front of web ----------------------------------------------------------------------


def test_the_shipped_nginx_conf_passes_nginx_t(tmp_path):
    result = nginx_check(NGINX_CONF, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_http_through_nginx_is_redirected_to_https_unless_the_tls_proxy_says_https(nginx):
    _, port, _ = nginx
    unit, approver, _ = make_approver("deployhttps")

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        plain = http.get("/api/me/", headers={"Host": HOST})
        tokens = http.post("/api/auth/token/", headers=HTTPS, json={"username": approver.username, "password": PASSWORD})
        me = http.get("/api/me/", headers={**HTTPS, "Authorization": f"Bearer {tokens.json()['access']}"})

    assert plain.status_code == 301 and plain.headers["Location"] == f"https://{HOST}/api/me/"
    assert tokens.status_code == 200, tokens.text
    assert me.status_code == 200 and me.json()["unit"]["id"] == str(unit.id)
    assert me.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_a_clients_own_x_forwarded_proto_is_overwritten_by_nginx(nginx):
    # given a client that is not the trusted TLS terminator (this test's nginx trusts 127.0.0.1
    # alone; the client connects from 127.0.0.2) and claims its plain-HTTP request was HTTPS
    _, port, _ = nginx
    client = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20, transport=client) as http:
        spoofed = http.get("/api/me/", headers=HTTPS)

    # then Django was told the truth (plain HTTP), and redirects it to HTTPS
    assert spoofed.status_code == 301 and spoofed.headers["Location"] == f"https://{HOST}/api/me/"


def test_compose_mounts_the_trusted_proxies_beside_nginx_conf(compose):
    mounts = {target: source for source, target, *_ in (volume.split(":") for volume in compose["nginx"]["volumes"])}
    assert mounts["/etc/nginx/trusted-proxies.conf"] == str(COMPOSE / "nginx" / "trusted-proxies.conf")
    # and the shipped file trusts no one until the operator lists their TLS terminator
    entries = [line for line in (COMPOSE / "nginx" / "trusted-proxies.conf").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert entries == []


def test_static_files_come_from_the_volume_gzipped(nginx, static_root):
    _, port, _ = nginx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        answer = http.get("/static/admin/css/base.css", headers={"Host": HOST, "Accept-Encoding": "gzip"})

    assert answer.status_code == 200
    assert answer.headers["Content-Encoding"] == "gzip"  # the .gz beside the file (gzip_static)
    assert answer.content == (static_root / "admin/css/base.css").read_bytes()  # httpx decompressed it
    assert answer.headers["Cache-Control"] == "max-age=604800, public"


def test_websockets_through_nginx_with_token_and_ticket_and_no_credential_in_any_log(web, nginx):
    web_proc, _ = web
    _, port, access_log = nginx
    unit, approver, store = make_approver("deployws")
    crate = CrateFactory(unit=unit)

    async def scenario():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20, headers=HTTPS) as http:
            tokens = (await http.post("/api/auth/token/", json={"username": approver.username, "password": PASSWORD})).json()
            auth = {"Authorization": f"Bearer {tokens['access']}"}
            ticket = (await http.post("/api/auth/ws-ticket/", headers=auth)).json()["ticket"]
            # a client that puts its token in an HTTP query string
            leaked = await http.get("/api/me/", params={"token": tokens["access"]}, headers=auth)
            assert leaked.status_code == 200
        by_token = await connect(port, origin=f"https://{HOST}", token=tokens["access"])
        by_ticket = await connect(port, origin=f"https://{HOST}", ticket=ticket)
        hellos = [await recv_json(by_token, 20), await recv_json(by_ticket, 20)]
        filled_before = await asyncio.to_thread(hub_filled, web_proc, settle=REPORT_SETTLE)
        # a committed change reaches both sockets through the proxy (published on COMMIT, before the call returns)
        await asyncio.to_thread(in_own_connection, services.crate_relocate, actor=store, crate_id=crate.id, location="Bay 9")
        committed = time.monotonic()
        updates, arrivals = [], []
        for ws in (by_token, by_ticket):
            updates.append(await recv_until(ws, "data_update", timeout=20))
            arrivals.append(time.monotonic() - committed)
        filled = await asyncio.to_thread(hub_filled, web_proc, settle=REPORT_SETTLE) - filled_before
        await by_token.close()
        await by_ticket.close()
        return tokens["access"], ticket, hellos, updates, arrivals, filled

    token, ticket, hellos, updates, arrivals, filled = asyncio.run(scenario())

    assert [h["type"] for h in hellos] == ["connection_established"] * 2
    assert {h["unit_id"] for h in hellos} == {str(unit.id)}
    assert [u["seq"] for u in updates] == [hellos[0]["seq"] + 1] * 2
    assert updates[0]["data"]["id"] == str(crate.id)
    # by the push: the hub's outbox fill (every 2 s in the compose file) delivered nothing, so the
    # update did not come that way (its counter is read from the web process's own report)...
    assert filled == 0
    # ...and within 1 s of the commit
    assert max(arrivals) < 1.0, arrivals
    # nginx logged both upgrades as JSON lines, by path alone
    deadline = time.monotonic() + 10
    while len([line for line in access_log.read_text().splitlines() if '"/ws/updates/"' in line]) < 2:
        assert time.monotonic() < deadline, access_log.read_text()
        time.sleep(0.1)
    entries = [json.loads(line) for line in access_log.read_text().splitlines()]
    upgrades = [e for e in entries if e["path"] == "/ws/updates/"]
    assert [e["status"] for e in upgrades] == [101, 101]
    # and no log line anywhere holds the token or the ticket
    for text in (access_log.read_text(), web_proc.output()):
        leaks = [line for line in text.splitlines() if token in line or ticket in line]
        assert leaks == []
    assert "GET /api/me/?token=[redacted]" in web_proc.output()  # Daphne's own access log, redacted
    assert {e["path"] for e in entries if e["path"].startswith("/api/me")} == {"/api/me/"}  # nginx: no query
