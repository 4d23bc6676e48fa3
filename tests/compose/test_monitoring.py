"""Monitoring in compose/, checked by real tools without a Docker engine: the prometheus and grafana
services as docker-compose renders them, the Prometheus config and alert rules by promtool (and the
alerts' unit tests), the Grafana dashboard and provisioning, nginx in front of Grafana, and Flower's
command keeping a day of tasks across restarts while answering Prometheus."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from bench import processes
from tests.support.deploy import (
    COMPOSE,
    NGINX_CONF,
    ROOT,
    deployed_env_text,
    local_argv,
    local_nginx,
    nginx_check,
    promql_metric_names,
    promtool,
    rendered_compose,
    replace_once,
    service_env,
    substitute,
)

PROMETHEUS = COMPOSE / "prometheus"
GRAFANA = COMPOSE / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "records.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# Every metric the dashboard and the alert rules may read, and where it comes from. The records_*
# names are the contract with the application's /metrics (backend/*/metrics.py, collected in
# backend/config/metrics.py); a query or rule reading any other name fails the test below.
APP_METRICS = {
    "records_commit_to_client_seconds_bucket": "histogram by process: COMMIT to the frame handed to a client connection's writer",
    "records_ws_messages_delivered_total": "counter by process: frames written to WebSocket clients",
    "records_ws_connections": "gauge by process: open WebSocket connections of each Daphne process",
    "records_ws_unit_connections": "gauge by unit: open WebSocket connections of each unit",
    "records_ws_error_closes_total": "counter by process, code: connections the server closed with an error code",
    "records_ws_outbox_fills_total": "counter by process: events a hub read from the outbox, not the push",
    "records_outbox_backlog": "gauge: committed events not yet published",
    "records_outbox_oldest_unpublished_seconds": "gauge: age of the oldest unpublished event",
    "records_events_written_total": "counter: outbox events committed",
    "records_events_published_total": "counter: outbox events handed to the channel layer",
    "records_relay_last_round_timestamp_seconds": "gauge by process: when each relay last finished a round (Unix time)",
    "records_relay_task_last_success_timestamp_seconds": "gauge by process, task: when each relay task last succeeded",
    "records_relay_task_failures_total": "counter by process, task: runs of each relay task that failed",
    "records_job_queue_depth": "gauge by queue: jobs waiting in each Celery queue",
    "records_job_queue_oldest_seconds": "gauge by queue: how long the oldest queued job has waited",
    "records_jobs": "gauge by kind, status: jobs in the Job table",
    "records_workers": "gauge: workers whose heartbeat is current",
    "records_redis_up": "gauge: 1 when the application reaches Redis",
    "records_database_up": "gauge: 1 when the application reaches PostgreSQL",
    "records_audit_chain_ok": "gauge by unit: 1 while the unit's audit trail passed its last scheduled verification",
    "records_audit_last_verified_seconds": "gauge: seconds the least recently verified unit's audit trail has gone unverified",
    "records_audit_checkpoint_lag_seconds": "gauge by unit: how long the unit's oldest entry no checkpoint has signed has waited",
    "records_audit_review_overdue": "gauge by unit: 1 while the unit's audit-trail review is overdue (AUDIT_REVIEW_DAYS)",
}
FLOWER_METRICS = {"flower_events_total": "counter by task, type, worker: Celery events Flower received"}
PROMETHEUS_SERIES = {"up": "1 when a target's last scrape succeeded", "ALERTS": "pending and firing alerts"}
DOCUMENTED_METRICS = APP_METRICS.keys() | FLOWER_METRICS.keys() | PROMETHEUS_SERIES.keys()

# What operators look at, each a query some panel of the dashboard must run.
DASHBOARD_SIGNALS = {
    "commit -> client p50": "histogram_quantile(0.5, sum by (le) (rate(records_commit_to_client_seconds_bucket[5m])))",
    "commit -> client p95": "histogram_quantile(0.95, sum by (le) (rate(records_commit_to_client_seconds_bucket[5m])))",
    "commit -> client p99": "histogram_quantile(0.99, sum by (le) (rate(records_commit_to_client_seconds_bucket[5m])))",
    "deliveries per second": "rate(records_ws_messages_delivered_total[5m])",
    "clients per Daphne process": "sum by (process) (records_ws_connections)",
    "clients per unit": "sum by (unit) (records_ws_unit_connections)",
    "outbox backlog": "max(records_outbox_backlog)",
    "oldest unpublished event": "max(records_outbox_oldest_unpublished_seconds)",
    "queue depth per queue": "max by (queue) (records_job_queue_depth)",
    "queue age per queue": "max by (queue) (records_job_queue_oldest_seconds)",
    "job outcomes": "sum by (kind, status) (records_jobs)",
    "workers": "sum(records_workers)",
    "Redis up": "min(records_redis_up)",
    "PostgreSQL up": "min(records_database_up)",
    "WebSocket error closes by code": "sum by (code) (rate(records_ws_error_closes_total[5m]))",
    "relay's last round": "time() - max(records_relay_last_round_timestamp_seconds)",
    "relay tasks' last success": "time() - records_relay_task_last_success_timestamp_seconds",
    "relay task failures": "sum by (task) (rate(records_relay_task_failures_total[5m]))",
    "events written": "sum(rate(records_events_written_total[5m]))",
    "events published": "sum(rate(records_events_published_total[5m]))",
    "outbox fills": "rate(records_ws_outbox_fills_total[5m])",
    "audit trail verified": "min by (unit) (records_audit_chain_ok)",
    "audit trail last verified": "max(records_audit_last_verified_seconds)",
    "audit-trail review overdue": "max by (unit) (records_audit_review_overdue)",
    "audit entries waiting for a checkpoint": "max by (unit) (records_audit_checkpoint_lag_seconds)",
}

REQUIRED_ALERTS = {
    "OutboxBacklogStale", "NoWorker", "JobQueueAging", "WebSocketErrorClosesSpiking",
    "CommitToClientLatencyOverBudget", "RelayNotRunning", "RelayTaskFailing", "RedisDown", "DatabaseDown",
    "AuditChainBroken", "AuditVerificationLate",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return rendered_compose()["services"]


def deployed_env() -> dict[str, str]:
    """The env file rendered_compose() used: the example with its placeholders replaced."""
    lines = [line for line in deployed_env_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.extend([panel, *panel.get("panels", [])])
    return [panel for panel in panels if panel["type"] != "row"]


def dashboard_queries() -> list[tuple[dict, str]]:
    return [(panel, target["expr"]) for panel in dashboard_panels() for target in panel["targets"]]


def volume_source(volume: str) -> str:
    """`/abs/path/compose/prometheus:/etc/prometheus:ro` -> `compose/prometheus` (named volumes as they are)."""
    source = volume.split(":", 1)[0]
    return str(Path(source).relative_to(ROOT)) if source.startswith("/") else source


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the services -------------------------------------------------------------------------------


def test_prometheus_and_grafana_run_pinned_official_images(compose):
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", compose["prometheus"]["image"])
    # grafana/grafana is the OSS image (grafana/grafana-oss stopped receiving releases at 12.4)
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", compose["grafana"]["image"])
    for name in ("prometheus", "grafana"):
        assert compose[name]["restart"] == "unless-stopped"
        assert compose[name]["healthcheck"]["test"][:2] == ["CMD", "wget"]


def test_monitoring_reads_its_files_read_only_and_keeps_its_data_on_named_volumes(compose):
    volumes = rendered_compose()["volumes"]
    prometheus = {volume_source(v): v.split(":", 1)[1] for v in compose["prometheus"]["volumes"]}
    grafana = {volume_source(v): v.split(":", 1)[1] for v in compose["grafana"]["volumes"]}

    assert prometheus == {"compose/prometheus": "/etc/prometheus:ro", "prometheusdata": "/prometheus:rw"}
    assert grafana == {
        "compose/grafana/provisioning": "/etc/grafana/provisioning:ro",
        "compose/grafana/dashboards": "/etc/grafana/dashboards:ro",
        "grafanadata": "/var/lib/grafana:rw",
    }
    assert {"prometheusdata", "grafanadata"} <= set(volumes)
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]
    assert "--storage.tsdb.path=/prometheus" in compose["prometheus"]["command"]


def test_prometheus_is_internal_and_grafana_is_reached_through_nginx(compose):
    conf = NGINX_CONF.read_text()
    grafana_env = compose["grafana"]["environment"]

    # neither publishes a host port: nginx stays the only way in, and it has no route to Prometheus
    assert "ports" not in compose["prometheus"] and "ports" not in compose["grafana"]
    assert compose["prometheus"]["expose"] == ["9090"] and compose["grafana"]["expose"] == ["3000"]
    assert "prometheus" not in re.sub(r"#.*", "", conf)
    # /grafana/ goes to grafana:3000 with its path unchanged, and Grafana serves that sub-path itself
    assert "set $grafana_upstream http://grafana:3000;" in conf
    assert re.search(r"location /grafana/ \{\s*proxy_pass \$grafana_upstream;", conf)
    assert grafana_env["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert grafana_env["GF_SERVER_ROOT_URL"].endswith("/grafana/")
    assert compose["grafana"]["healthcheck"]["test"][-1] == "http://127.0.0.1:3000/grafana/api/health"
    assert compose["nginx"]["depends_on"]["grafana"] == {"condition": "service_started"}


def test_grafana_admin_comes_from_the_environment_and_no_one_else_gets_in(compose):
    grafana_env = compose["grafana"]["environment"]
    operator = deployed_env()

    assert grafana_env["GF_SECURITY_ADMIN_USER"] == operator["GRAFANA_ADMIN_USER"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == operator["GRAFANA_ADMIN_PASSWORD"]
    assert "change-me" not in grafana_env["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana_env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # secure cookies whenever Django redirects to HTTPS; nothing fetched from the Internet at start
    assert grafana_env["GF_SECURITY_COOKIE_SECURE"] == compose["web"]["environment"]["SECURE_SSL_REDIRECT"]
    assert grafana_env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"


def test_the_prometheus_entrypoint_writes_the_metrics_token_where_the_config_reads_it(compose, tmp_path):
    # given the rendered entrypoint, run by a local sh with the tmpfs and the binary swapped
    service = compose["prometheus"]
    entrypoint, command = service["entrypoint"], service["command"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and service["tmpfs"] == ["/run/prometheus"]
    script = entrypoint[2].replace("$$", "$")  # docker-compose config escapes $ in its output
    script = replace_once(script, "/run/prometheus/", f"{tmp_path}/run/")
    stub = tmp_path / "prometheus"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    stub.chmod(0o755)
    script = replace_once(script, "exec /bin/prometheus", f"exec {stub}")
    (tmp_path / "run").mkdir()

    # when it starts
    result = subprocess.run(
        [shutil.which("sh"), "-c", script, *entrypoint[3:], *command],
        env={"PATH": os.environ["PATH"], **service["environment"]}, capture_output=True, text=True, timeout=30,
    )

    # then the token is in the file prometheus.yml names, for Prometheus's user only, and Prometheus
    # runs with the service's command
    assert result.returncode == 0, result.stderr
    token = tmp_path / "run" / "metrics_token"
    assert token.read_text() == compose["web"]["environment"]["METRICS_TOKEN"] == service["environment"]["METRICS_TOKEN"]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert (tmp_path / "argv").read_text().splitlines() == command
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    records = next(job for job in config["scrape_configs"] if job["job_name"] == "records")
    assert records["authorization"] == {"type": "Bearer", "credentials_file": "/run/prometheus/metrics_token"}


def test_prometheus_scrapes_the_compose_services_by_name(compose):
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert jobs["records"]["static_configs"] == [{"targets": ["web:8000"]}]
    assert jobs["records"]["metrics_path"] == "/metrics"
    assert jobs["flower"]["static_configs"] == [{"targets": ["flower:5555"]}]
    assert jobs["flower"]["metrics_path"] == "/flower/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    # the services listen there, and Django accepts the Host header Prometheus sends (`web:8000`)
    assert compose["web"]["expose"] == ["8000"] and compose["flower"]["expose"] == ["5555"]
    assert "web" in compose["web"]["environment"]["ALLOWED_HOSTS"].split(",")


# --- promtool: the config, the rules and their unit tests -----------------------------------------


def test_promtool_passes_the_prometheus_config(tmp_path):
    # the shipped file as it is (its syntax, its rules file) ...
    syntax = promtool("check", "config", "--syntax-only", "prometheus.yml", cwd=PROMETHEUS)
    # ... and a copy whose token file exists here (the full check opens every file it names)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "metrics_token").write_text("a-token")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    config = replace_once(config, "/run/prometheus/metrics_token", str(tmp_path / "metrics_token"))
    (tmp_path / "prometheus.yml").write_text(config)
    full = promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    assert full.returncode == 0, full.stdout + full.stderr
    assert "SUCCESS" in full.stdout and f"{len(alert_rules())} rules found" in full.stdout


def test_promtool_passes_the_alert_rules():
    result = promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alert_unit_tests_pass():
    result = promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_unit_tests_can_fail(tmp_path):
    # given a copy where one expectation is wrong: NoWorker said to fire a minute early
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    tests = (PROMETHEUS / "alerts.test.yml").read_text()
    firing = "      - eval_time: 3m\n        alertname: NoWorker\n"
    wrong = replace_once(tests, firing, firing.replace("3m", "2m"))
    (tmp_path / "alerts.test.yml").write_text(wrong)

    # when promtool runs them
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)

    # then it fails, naming the alert and what it got instead
    assert result.returncode != 0
    assert "alertname: NoWorker, time: 2m" in result.stdout + result.stderr


def test_every_alert_the_runbook_needs_exists_is_tested_and_has_its_runbook_section():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    anchors = {github_anchor(line.lstrip("#")) for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}

    assert REQUIRED_ALERTS <= set(rules)
    # every alert has a unit test in which it fires (and promtool checks it stays silent before)
    assert set(rules) == fired
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{name.lower()}", name
        assert runbook.split("#", 1)[1] in anchors, f"docs/operations.md has no section for {name}"


# --- the dashboard and Grafana's provisioning -------------------------------------------------------


def test_the_dashboard_has_a_panel_for_every_signal():
    queries = dashboard_queries()

    missing = {signal: query for signal, query in DASHBOARD_SIGNALS.items() if not any(query in expr for _, expr in queries)}
    assert not missing
    # and every panel says what it shows, from the provisioned data source
    for panel in dashboard_panels():
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert all(target["datasource"] == panel["datasource"] for target in panel["targets"]), panel["title"]


def test_the_dashboard_panels_do_not_overlap():
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"  # Grafana links and edits panels by id
    cells = {}
    for panel in dashboard()["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses every query as the expression of a recording rule
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:panel_{panel['id']}:{i}", "expr": expr} for i, (panel, expr) in enumerate(queries)]
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_metric_the_dashboard_and_the_alerts_read_is_documented():
    read = {expr: promql_metric_names(expr) for _, expr in dashboard_queries()}
    read.update({rule["expr"]: promql_metric_names(rule["expr"]) for rule in alert_rules()})

    undocumented = {expr: names - DOCUMENTED_METRICS for expr, names in read.items() if names - DOCUMENTED_METRICS}
    assert not undocumented
    # every application metric of the contract is on the dashboard
    assert APP_METRICS.keys() <= set().union(*(promql_metric_names(expr) for _, expr in dashboard_queries()))


def test_the_metric_names_are_found_in_promql():
    # the scan above finds names, not functions, labels, keywords, strings or durations
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{code!="x y"}[5m]))) > 0.5'
    expr += " or on() absent(b) * 1e3 + c offset 5m"
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b", "c"}


def test_grafana_provisioning_points_at_prometheus_and_at_the_dashboards(compose):
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "records.yml").read_text())
    (source,) = datasources["datasources"]
    (provider,) = providers["providers"]
    mounts = {volume_source(v): v.split(":")[1] for v in compose["grafana"]["volumes"]}
    dashboards_mount = mounts["compose/grafana/dashboards"]

    # the data source is the prometheus service, on the port it listens on, with the uid the panels use
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "--web.listen-address=:9090" in compose["prometheus"]["command"]
    assert source["uid"] == "prometheus" and source["isDefault"] is True and source["editable"] is False
    # the dashboards come from the mounted folder, which holds the home dashboard
    assert provider["type"] == "file" and provider["options"]["path"] == dashboards_mount
    home = compose["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_mount}/{DASHBOARD.name}"
    assert provider["allowUiUpdates"] is False and provider["disableDeletion"] is True


# --- nginx in front of Grafana ------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """An upstream that answers 200 with its name and remembers each request (path, headers)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    servers = []

    def start(name: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.name, server.seen = name, []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_shipped_nginx_conf_with_grafana_passes_nginx_t(tmp_path):
    result = nginx_check(NGINX_CONF, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_sends_grafana_its_sub_path_and_keeps_flower_metrics_inside(upstream, tmp_path):
    # given the shipped nginx.conf in front of a stand-in Grafana and Flower
    grafana, flower = upstream("grafana"), upstream("flower")
    port = processes.free_port()
    upstreams = {"grafana:3000": f"127.0.0.1:{grafana.server_port}", "flower:5555": f"127.0.0.1:{flower.server_port}"}
    (tmp_path / "static").mkdir()
    args = local_nginx(tmp_path, port, upstreams, tmp_path / "static", tmp_path / "access.log")
    proc = processes.LiveProcess("monitoring-nginx", args, {"PATH": os.environ["PATH"]})
    try:
        processes.wait_for_port(port, proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            page = http.get("/grafana/d/records-realtime?orgId=1", headers={"Host": "records.example.com"})
            live = http.get("/grafana/api/live/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
            variants = ("/flower/metrics", "/flower//metrics", "/flower/metrics?x=1", "/flower/%6Detrics")
            metrics = [http.get(path).status_code for path in variants]
            flower_page = http.get("/flower/")
            bare = http.get("/grafana", headers={"Host": "records.example.com"})
    finally:
        proc.stop()

    # then Grafana gets its path whole, the client's host, and WebSocket upgrades
    assert page.status_code == 200 and page.text == "grafana"
    path, headers = grafana.seen[0]
    assert path == "/grafana/d/records-realtime?orgId=1"
    assert headers["host"] == "records.example.com" and headers["x-forwarded-proto"] == "http"
    assert live.status_code == 200
    assert bare.status_code == 301 and bare.headers["location"] == "/grafana/"
    assert grafana.seen[1][1]["upgrade"] == "websocket" and grafana.seen[1][1]["connection"] == "upgrade"
    # Flower's unauthenticated /metrics is not served from outside, the rest of Flower is
    assert metrics == [404, 404, 404, 404]
    assert flower_page.status_code == 200 and [path for path, _ in flower.seen] == ["/flower/"]


# --- Flower: a day of tasks, across restarts, and its metrics for Prometheus ------------------------


def send_task_events(task_id: str, what: str) -> None:
    """The events a worker sends for one job, straight to the test broker's event exchange."""
    from workers.celery import app

    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname="worker@monitoring-test", enabled=True)
        kwargs = repr({"job_id": task_id, "what": what})
        dispatcher.send("task-received", uuid=task_id, name="withdrawal.approve", args="()", kwargs=kwargs, retries=0)
        dispatcher.send("task-started", uuid=task_id)
        dispatcher.send("task-succeeded", uuid=task_id, result=repr({"job_id": task_id}), runtime=0.04)
        dispatcher.close()


def complete(info: httpx.Response) -> bool:
    """Flower's answer for the test task holds every event's part: its name, arguments and outcome."""
    return info.status_code == 200 and info.json().get("name") == "withdrawal.approve" and info.json().get("state") == "SUCCESS"


SUCCEEDED_SERIES = r'^flower_events_total\{.*type="task-succeeded".*\} [1-9]\d*\.0$'


def start_flower(compose: dict, live_env: dict, db: Path) -> tuple[processes.LiveProcess, int]:
    port = processes.free_port()
    command = substitute(compose["flower"]["command"], "--address=0.0.0.0", "--address=127.0.0.1")
    command = substitute(command, "--port=5555", f"--port={port}")
    command = substitute(command, "--db=/app/var/flower.db", f"--db={db}")
    proc = processes.LiveProcess("monitoring-flower", local_argv(command), service_env(compose["flower"], live_env))
    processes.wait_for_port(port, timeout=60, proc=proc)
    return proc, port


@pytest.mark.integration
def test_flower_keeps_its_tasks_across_a_restart_and_answers_prometheus(compose, live_env, tmp_path):
    flower = compose["flower"]
    assert "--persistent=True" in flower["command"] and "--max_tasks=30000" in flower["command"]
    assert "flowerdata:/app/var:rw" in flower["volumes"]
    user, password = flower["environment"]["FLOWER_BASIC_AUTH"].split(":", 1)
    task_id, what = str(uuid.uuid4()), "approve WR-2026-0042 by north.approver"
    db = tmp_path / "flower.db"

    # given Flower as compose runs it (its state file in a temporary directory), seeing one job's task
    proc, port = start_flower(compose, live_env, db)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            deadline = time.monotonic() + 30
            while True:
                # until Flower's event receiver has connected and holds the whole task: a receiver that
                # connects between two of the three events sees the task (200) without task-received's
                # name and kwargs, so sending again until they are in is what makes this deterministic
                # (Celery's state merges a late task-received's fields into a task already SUCCESS)
                send_task_events(task_id, what)
                seen = http.get(f"/flower/api/task/info/{task_id}", auth=(user, password))
                if complete(seen) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            # Flower's receiver thread applies the three events one by one: the task can be visible
            # (task-received) before task-succeeded is counted, so read until all three are in
            while True:
                # Prometheus's scrape: no credentials, a Content-Type Prometheus 3 accepts
                metrics = http.get("/flower/metrics")
                if re.search(SUCCEEDED_SERIES, metrics.text, re.M) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    finally:
        # when it stops (SIGTERM, as `docker compose stop` does) and starts again on the same file
        proc.stop(timeout=30)
    assert complete(seen), (seen.status_code, seen.text[-1000:], proc.output()[-3000:])
    assert db.exists() or list(tmp_path.glob("flower.db*")), proc.output()[-3000:]
    proc, port = start_flower(compose, live_env, db)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            anonymous = http.get(f"/flower/api/task/info/{task_id}")
            restored = http.get(f"/flower/api/task/info/{task_id}", auth=(user, password))
    finally:
        proc.stop(timeout=30)

    # then the task is still there, with what the job did and its outcome; only an operator sees it
    assert anonymous.status_code == 401
    assert restored.status_code == 200, proc.output()[-3000:]
    assert restored.json()["name"] == "withdrawal.approve" and restored.json()["state"] == "SUCCESS"
    assert what in restored.json()["kwargs"]
    # and Prometheus can read Flower's metrics inside the compose network
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].split(";")[0] == "text/plain"
    assert re.search(SUCCEEDED_SERIES, metrics.text, re.M), metrics.text[-3000:]


# --- the application's /metrics, scraped as Prometheus scrapes it ---------------------------------


def exposed_metric_names(text: str) -> set[str]:
    """The series names a Prometheus text exposition declares, with or without samples yet (a gauge
    by label has none while nothing is labelled): the samples, and the names of each `# TYPE`."""
    names = {match.group(1) for match in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(family)
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        if kind == "histogram":
            names.update(f"{family}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_web_service_answers_prometheus_with_every_contract_metric(compose, live_env, tmp_path):
    # given the web service as compose runs it (production settings, the rendered environment)
    port = processes.free_port()
    command = substitute(compose["web"]["command"], "port=8000", f"port={port}")
    command = substitute(command, "interface=0.0.0.0", "interface=127.0.0.1")
    env = service_env(compose["web"], live_env, STATIC_ROOT=str(tmp_path))
    proc = processes.LiveProcess("monitoring-web", local_argv(command), env)
    try:
        processes.wait_for_port(port, timeout=60, proc=proc)
        # when Prometheus scrapes it: Host from the target, the token from its file, plain HTTP
        token = compose["prometheus"]["environment"]["METRICS_TOKEN"]
        scrape = httpx.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Host": "web:8000", "Authorization": f"Bearer {token}"}, timeout=30,
        )
        anonymous = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Host": "web:8000"}, timeout=30)
        log = proc.output()
    finally:
        proc.stop()

    # then it answers with the metrics, and only to the token
    assert scrape.status_code == 200, (scrape.status_code, scrape.headers.get("location"), log[-2000:])
    assert anonymous.status_code == 401
    assert not APP_METRICS.keys() - exposed_metric_names(scrape.text)
