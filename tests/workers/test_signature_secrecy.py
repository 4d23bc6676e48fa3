"""The signature password is checked and forgotten: on real processes, with every log at DEBUG, it
is in no log line (Daphne, worker, Flower), no message the broker carried, no task Flower shows, and
no row of any table, after signed single and bulk decisions and a wrong attempt."""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import uuid

import httpx
import pytest
import redis
from django.apps import apps
from django.conf import settings
from django.contrib.auth.hashers import make_password

from backend.accounts.models import Role
from backend.jobs.models import Job
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.pipeline import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class BrokerWatch:
    """Every command the Redis server receives while the test runs (MONITOR), kept as text."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.commands: list[str] = []
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        try:
            for command in self.monitor.listen():
                self.commands.append(command["command"])
        except Exception:  # noqa: BLE001 - the connection is closed when the test is done
            pass

    def close(self) -> None:
        try:
            self.monitor.connection.disconnect()
        finally:
            self.thread.join(5)

    def text(self) -> str:
        """The commands, with kombu's base64 message bodies decoded (a task's arguments are there)."""
        decoded = []
        for command in self.commands:
            for body in re.findall(r'\\?"body\\?": \\?"([A-Za-z0-9+/=]{8,})', command):
                try:
                    decoded.append(base64.b64decode(body).decode("utf-8", "replace"))
                except ValueError:
                    pass
        return "\n".join(self.commands + decoded)


def _database_text() -> str:
    """Every value of every row of every table the project owns, as text."""
    rows = []
    for model in apps.get_models():
        for values in model.objects.all().values_list():
            rows.append(" ".join(map(str, values)))
    return "\n".join(rows)


def test_the_signature_password_is_never_stored_logged_queued_or_shown(live_env, own_processes):
    secret = f"Sign-{uuid.uuid4().hex}"
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER, password=make_password(secret))
    single, *many = [make_request("withdrawal", requester, [CrateFactory(unit=unit)]) for _ in range(3)]
    env = {**live_env, "TEST_LOG_LEVEL": "DEBUG"}

    watch = BrokerWatch(settings.CELERY_BROKER_URL)
    try:
        daphne, port = processes.start_daphne(env, extra=["-v", "2"])
        own_processes.append(daphne)
        worker = processes.LiveProcess("worker-secrecy", [
            sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-l", "debug", "-Q", "default,bulk",
            "-n", "secrecy@%h", "--concurrency", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ], env)
        own_processes.append(worker)
        worker.wait_for_output("ready.", timeout=40)
        flower_port = processes.free_port()
        flower = processes.LiveProcess("flower-secrecy", [
            sys.executable, "-m", "celery", "-A", "workers.celery", "flower", "--address=127.0.0.1",
            f"--port={flower_port}",
        ], {**env, "FLOWER_BASIC_AUTH": "ops:flower-pass"})
        own_processes.append(flower)
        processes.wait_for_port(flower_port, timeout=30, proc=flower)

        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20,
                            headers={"Authorization": f"Bearer {access_token(approver)}"})
        # when the approver signs a single approval, mistypes once, and signs a bulk approval
        signature = {"password": secret, "meaning": "approved"}
        wrong = http.post(f"/api/withdrawal-requests/{single.id}/approve/",
                          json={"signature": {"password": secret + "x", "meaning": "approved"}})
        assert wrong.status_code == 403
        answers = [
            http.post(f"/api/withdrawal-requests/{single.id}/approve/", json={"signature": signature}),
            http.post("/api/bulk-actions/", json={"entity": "withdrawal", "action": "approve",
                                                  "ids": [str(r.id) for r in many], "signature": signature}),
        ]
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        job_ids = [a.json()["job"]["id"] for a in answers]
        wait_until(lambda: set(Job.objects.filter(id__in=job_ids).values_list("status", flat=True)) == {"succeeded"},
                   30, "both signed jobs to succeed")

        def flower_has_them() -> str | None:
            tasks = httpx.get(f"http://127.0.0.1:{flower_port}/api/tasks", auth=("ops", "flower-pass"), timeout=10)
            return tasks.text if all(j in tasks.text for j in job_ids) else None

        flower_tasks = wait_until(flower_has_them, 30, "Flower to list the signed jobs")
        flower_pages = "\n".join(
            httpx.get(f"http://127.0.0.1:{flower_port}/api/task/info/{j}", auth=("ops", "flower-pass"), timeout=10).text
            for j in job_ids
        )
    finally:
        watch.close()

    # then the password is nowhere: not in a log, a broker message, Flower, or a row
    logs = {proc.name: proc.output() for proc in own_processes}
    assert "POST" in logs[daphne.name] and "withdrawal.approve" in logs[worker.name]  # the logs are the real ones
    assert any("bulk" in c or "withdrawal.approve" in c for c in watch.commands)  # and the broker was watched
    places = {**logs, "broker": watch.text(), "flower tasks": flower_tasks, "flower task pages": flower_pages,
              "database": _database_text(), "job params": json.dumps(list(Job.objects.values("params")))}
    leaked = [where for where, text in places.items() if secret in text]
    assert leaked == []
