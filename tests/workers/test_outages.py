"""Outages delay work, never fail it or strand it. Drills on real processes: a Redis of the test's own
(broker, channel layer and keys, no persistence: a restart loses everything, like a crash) restarted
under a running bulk; a broker that lost a queued job's message; a worker killed while running a job;
a `make up` process killed under honcho."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from backend.accounts.models import Role
from backend.jobs.models import Job, JobOutcome, JobStatus
from backend.records.models import Crate, RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request, pending_requests_fast
from tests.support.pipeline import wait_until
from tests.support.realtime import SeqClient
from tests.support.signing import sign, signed

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The relay looks for stranded jobs every second and suspects one after 3 s; workers beat every second.
FAST_RESCUE = {"JOB_RESCUE_SECONDS": "1", "JOB_RESCUE_AFTER_SECONDS": "3", "WORKER_HEARTBEAT_SECONDS": "1"}


def procfile_worker(env: dict[str, str], name: str) -> processes.LiveProcess:
    """A worker started as `make up` starts it: concurrency 2, gossip, mingle and heartbeats on (the
    shape in which kombu's reconnect path crashed the worker: a task running, the consumer in BRPOP)."""
    args = [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-l", "info", "-Q", "default,bulk",
            "--concurrency", "2", "-n", f"{name}@%h"]
    proc = processes.LiveProcess(f"worker-{name}", args, env)
    proc.wait_for_output("ready.", timeout=40)
    return proc


def _post(port: int, path: str, user, body: dict) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}{path}", json=body, headers={"Authorization": f"Bearer {access_token(user)}"},
                      timeout=30)


def test_redis_restarts_under_a_running_bulk_delay_it_and_lose_nothing(live_env, redis_server):
    # given Daphne, a worker as `make up` runs it and the relay, all on a Redis of the test's own,
    # and a 3,000-item bulk approval stretched over a few seconds (chunks of 100)
    env = {
        **live_env, **FAST_RESCUE,
        "TEST_CELERY_BROKER_URL": redis_server.url(0), "TEST_CHANNEL_LAYER_URL": redis_server.url(1),
        "TEST_KEYS_REDIS_URL": redis_server.url(2), "REALTIME_REVALIDATE_SECONDS": "1",
        "BULK_CHUNK_SIZE": "100", "FAULT_POINTS": "job.after_chunk=pause:0.1",
    }
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 3000)]
    start = unit_seq_of(unit)
    daphne, port = processes.start_daphne(env)
    worker = procfile_worker(env, "outage")
    relay = processes.start_relay(env)
    everyone = [daphne, worker, relay]
    plain = SeqClient(port, access_token(requester))
    batched = SeqClient(port, access_token(UserFactory(unit=unit, role=Role.REQUESTER)), batch=True)

    async def scenario():
        await plain.open()
        await batched.open()
        answer = await asyncio.to_thread(_post, port, "/api/bulk-actions/", approver,
                                         signed("approve", {"entity": "withdrawal", "action": "approve", "ids": ids}))
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job"]["id"]
        # when Redis goes away for about a second, three times, while the bulk runs
        for _ in range(3):
            await asyncio.sleep(1.5)
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(1)
            await asyncio.to_thread(redis_server.start)
        job = await asyncio.to_thread(
            wait_until, lambda: _finished(job_id), 90, "the bulk to finish after the outages"
        )
        final = await asyncio.to_thread(unit_seq_of, unit)
        # and both clients follow (reconnecting with last_seq where they were closed)
        await asyncio.gather(plain.follow(until=final, timeout=60), batched.follow(until=final, timeout=60))
        await plain.close()
        await batched.close()
        return job, final

    try:
        job, final = asyncio.run(scenario())
        alive = {proc.name: proc.alive for proc in everyone}
        worker_log = worker.output()
    finally:
        for proc in everyone:
            proc.stop()

    # then no process exited, and the worker never hit kombu's reconnect crash,
    assert alive == {proc.name: True for proc in everyone}
    assert "Unrecoverable error" not in worker_log
    # the job succeeded with every id applied exactly once (one outcome each, version 2 each),
    assert (job.status, job.progress) == (JobStatus.SUCCEEDED, {"total": 3000, "done": 3000, "failed": 0})
    assert JobOutcome.objects.filter(job=job).count() == 3000
    assert set(WithdrawalRequest.objects.filter(id__in=ids).values_list("status", "version")) == {(RequestStatus.APPROVED, 2)}
    # 6,000 events (request + crate each), gap-free,
    assert final == start + 6000
    # and each client saw every seq once, in order
    plain.assert_exactly(start + 1, final)
    batched.assert_exactly(start + 1, final)
    assert plain.resyncs == batched.resyncs == []


def unit_seq_of(unit) -> int:
    from backend.events.models import UnitSequence

    return UnitSequence.objects.get(unit=unit).last_seq


def _finished(job_id: str) -> Job | None:
    job = Job.objects.get(id=job_id)
    return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None


def test_a_job_whose_message_the_broker_lost_is_sent_again(live_env, redis_server, own_processes):
    # given a job queued (through a Daphne, on a broker of the test's own) while no worker runs
    env = {**live_env, **FAST_RESCUE, "TEST_CELERY_BROKER_URL": redis_server.url(0)}
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    crate = CrateFactory(unit=unit)
    daphne, port = processes.start_daphne(env)
    own_processes.append(daphne)
    job_id = _post(port, f"/api/crates/{crate.id}/relocate/", store, {"location": "Vault 9"}).json()["job"]["id"]
    broker = redis.Redis.from_url(redis_server.url(0))
    assert broker.llen("default") == 1
    # whose message the broker then loses (no persistence, or the process died before sending)
    broker.flushdb()

    # when the relay and a worker run
    own_processes.append(processes.start_relay(env))
    own_processes.append(processes.start_worker(env, name="lost"))

    # then the relay sent the task again (to its kind's queue) and the job ran, once
    job = wait_until(lambda: _finished(job_id), 30, "the lost job to run")
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    crate.refresh_from_db()
    assert (crate.location, crate.version) == ("Vault 9", 2)
    assert f"re-enqueued 1 stranded jobs: {job_id}" in own_processes[1].output()


def test_a_job_whose_worker_died_is_sent_again_long_before_the_visibility_timeout(live_env, own_processes, private_queue):
    # given a worker (with the default 15-minute visibility timeout) that dies holding a job: it is
    # SIGKILLed while the job's transaction is open
    env = {**live_env, **FAST_RESCUE}
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester)
    doomed = processes.start_worker({**env, "FAULT_POINTS": "job.before_commit=pause:30"}, name="doomed",
                                    queues=private_queue)
    own_processes.append(doomed)
    from tests.support.queues import enqueue_on

    with enqueue_on(private_queue):
        job_id = str(_submit_approval(approver, request))
    doomed.wait_for_output(f"fault point job.before_commit reached (pause) job={job_id}", timeout=30)
    doomed.kill()
    doomed.popen.wait(10)
    killed_at = time.monotonic()

    # when the relay and another worker (on the job kind's own queue) run
    own_processes.append(processes.start_relay(env))
    own_processes.append(processes.start_worker(env, name="heir"))

    # then the relay saw the dead worker's job and sent it again: it ran once, within seconds
    job = wait_until(lambda: _finished(job_id), 60, "the dead worker's job to be run again")
    took = time.monotonic() - killed_at
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    assert took < 30, took  # the visibility timeout would have taken 900 s
    request.refresh_from_db()
    assert (request.status, request.version) == (RequestStatus.APPROVED, 2)
    assert {c.version for c in Crate.objects.filter(unit=unit)} == {2}


def _submit_approval(approver, request) -> str:
    from backend.jobs.services import job_submit
    from backend.records.job_kinds import TRANSITION_KINDS

    params = {"signature_id": str(sign(approver, "withdrawal", "approve")), "versions": {str(request.id): request.version}}
    return job_submit(actor=approver, kind=TRANSITION_KINDS["withdrawal", "approve"], targets=[request.id], params=params).id


def test_make_up_restarts_a_crashed_process_and_keeps_the_rest_running(live_env):
    # given the worker and the relay of the Procfile under honcho, as `make up` runs them
    env = {**live_env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RESPAWN_DELAY": "1"}
    honcho = subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile", "worker", "relay"],
        cwd=processes.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        _read_until(honcho, lines, "ready.", 60)
        celery, relay = _worker_main(honcho.pid), _relay(honcho.pid)
        # when the worker's main process is killed with -9
        celery.kill()
        # then respawn says so and starts it again, and honcho keeps the rest of the stack up
        _read_until(honcho, lines, "respawn: worker exited with code", 20)
        _read_until(honcho, lines, "ready.", 60)
        assert honcho.poll() is None
        assert _worker_main(honcho.pid).pid != celery.pid
        assert _relay(honcho.pid).pid == relay.pid
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(30)


def test_respawn_gives_up_loudly_on_a_crash_loop():
    script = processes.ROOT / "scripts" / "respawn"
    result = subprocess.run([str(script), "boom", "--", "sh", "-c", "exit 3"], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "RESPAWN_DELAY": "0"})
    assert result.returncode == 3
    assert result.stderr.count("respawn: boom exited with code 3; restarting it") == 4
    assert "respawn: boom exited with code 3 for the 5th time within 60 s; giving up" in result.stderr


def _read_until(proc: subprocess.Popen, lines: list[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
            if text in line:
                return
        else:
            if proc.poll() is not None:
                raise AssertionError("honcho exited:\n" + "".join(lines[-40:]))
            time.sleep(0.1)
    raise TimeoutError(f"no {text!r} within {timeout}s:\n" + "".join(lines[-40:]))


def _worker_main(honcho_pid: int) -> psutil.Process:
    """The worker's main process under honcho: a `celery` process whose parent is not one (its pool
    children's parent is; respawn's shell is `bash`)."""
    for child in psutil.Process(honcho_pid).children(recursive=True):
        if child.name() == "celery" and child.parent().name() != "celery":
            return child
    raise AssertionError("no celery worker under honcho")


def _relay(honcho_pid: int) -> psutil.Process:
    for child in psutil.Process(honcho_pid).children(recursive=True):
        if child.name().startswith("python") and "workers.relay" in child.cmdline():
            return child
    raise AssertionError("no relay under honcho")
