"""What clients and operators see around the queue, on real processes: a 503 when the broker is down
(and nothing left behind), and Flower behind basic auth showing our named, described tasks."""

from __future__ import annotations

import ast
import sys

import httpx
import pytest

from backend.accounts.models import Role
from backend.jobs.models import Job
from backend.records.models import RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.pipeline import wait_until
from tests.support.signing import signed
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def withdrawal_scene():
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester, [CrateFactory(unit=unit)])
    return unit, approver, request


def test_an_approval_while_the_broker_is_unreachable_answers_503_and_leaves_no_job(live_env, own_processes):
    # given a Daphne whose Celery broker is a port nothing listens on
    closed_port = processes.free_port()
    proc, port = processes.start_daphne({**live_env, "TEST_CELERY_BROKER_URL": f"redis://127.0.0.1:{closed_port}/0"})
    own_processes.append(proc)
    unit, approver, request = withdrawal_scene()

    # when the approver approves (the client gives up after 15 s, so a hang fails the test)
    answer = httpx.post(
        f"http://127.0.0.1:{port}/api/withdrawal-requests/{request.id}/approve/",
        json=signed("approve"),
        headers={"Authorization": f"Bearer {access_token(approver)}"},
        timeout=15,
    )

    # then 503 with the stable code, no job row remains and the request is untouched
    assert answer.status_code == 503
    assert answer.json()["code"] == "broker_unavailable"
    assert answer.json()["message"]
    assert not Job.objects.filter(unit=unit).exists()
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.PENDING


@pytest.fixture
def flower(live_env, own_processes) -> str:
    """A real Flower on a free port, basic auth from FLOWER_BASIC_AUTH (as `make up` runs it)."""
    port = processes.free_port()
    proc = processes.LiveProcess(
        "flower",
        [sys.executable, "-m", "celery", "-A", "workers.celery", "flower", "--address=127.0.0.1", f"--port={port}"],
        {**live_env, "FLOWER_BASIC_AUTH": "ops:s3cret-flower"},
    )
    own_processes.append(proc)
    processes.wait_for_port(port, timeout=30, proc=proc)
    return f"http://127.0.0.1:{port}"


def test_flower_requires_basic_auth_and_shows_the_job_task_by_name_and_description(flower, worker, api):
    auth = ("ops", "s3cret-flower")

    # given Flower: without credentials it answers 401, with them 200
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", auth=auth, timeout=10).status_code == 200
    assert httpx.get(f"{flower}/", auth=auth, timeout=10).status_code == 200

    # and its event receiver is connected (it sees a task the session worker runs)
    def flower_saw_a_prune() -> bool:
        celery_app.send_task("jobs.prune")
        tasks = httpx.get(f"{flower}/api/tasks", params={"taskname": "jobs.prune"}, auth=auth, timeout=10).json()
        return bool(tasks)

    wait_until(flower_saw_a_prune, 30, "Flower to receive task events")

    # when an approval is submitted through the API and the worker runs it
    unit, approver, request = withdrawal_scene()
    job_id = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve")).json()["job"]["id"]

    def flower_task() -> dict | None:
        info = httpx.get(f"{flower}/api/task/info/{job_id}", auth=auth, timeout=10)
        return info.status_code == 200 and info.json().get("state") == "SUCCESS" and info.json()

    task = wait_until(flower_task, 30, "Flower to show the finished job task")

    # then Flower names the task and shows what it did, to what, by whom (our kwargsrepr)
    assert task["name"] == "withdrawal.approve"
    assert task["uuid"] == job_id
    assert ast.literal_eval(task["kwargs"]) == {
        "job_id": job_id,
        "what": f"approve {unit.code} {request.request_number} by {approver.username}",
    }
    listed = httpx.get(f"{flower}/api/tasks", params={"taskname": "withdrawal.approve"}, auth=auth, timeout=10).json()
    assert listed[job_id]["name"] == "withdrawal.approve"


def test_flower_shows_a_bulk_job_s_progress_while_it_runs(flower, live_env, own_processes, private_queue, api):
    """Bulk progress reaches operators through the task state: PROGRESS with the counts while it
    runs, and the final counts once it succeeds."""
    from tests.support.factories import pending_requests_fast
    from tests.support.queues import enqueue_on

    auth = ("ops", "s3cret-flower")
    env = {**live_env, "BULK_CHUNK_SIZE": "2", "FAULT_POINTS": "job.after_chunk=pause:1.5"}
    own_processes.append(processes.start_worker(env, name="bulk-progress", queues=private_queue))
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 6)]

    # when an operator's bulk approval of 6 ids runs, 2 per chunk
    with enqueue_on(private_queue):
        job_id = api(approver).post(
            "/api/bulk-actions/", signed("approve", {"entity": "withdrawal", "action": "approve", "ids": ids})
        ).json()["job"]["id"]

    def info() -> dict:
        answer = httpx.get(f"{flower}/api/task/info/{job_id}", auth=auth, timeout=10)
        return answer.json() if answer.status_code == 200 else {}

    # then Flower shows it in state PROGRESS with the counts so far
    running = wait_until(lambda: (i := info()).get("state") == "PROGRESS" and i, 40, "a PROGRESS state in Flower")
    assert running["name"] == "bulk.withdrawal.approve"
    assert running["result"] in {"2/6 done, 0 failed", "4/6 done, 0 failed"}
    # and the final counts once it has succeeded
    done = wait_until(lambda: (i := info()).get("state") == "SUCCESS" and i, 40, "SUCCESS in Flower")
    assert "6/6 done, 0 failed" in done["result"]
    assert Job.objects.get(id=job_id).progress == {"total": 6, "done": 6, "failed": 0}
