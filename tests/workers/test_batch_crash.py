"""The set-based job path under a worker SIGKILLed mid-batch (issue 30), on real processes: five
queued relocations of one unit are taken by one worker as a batch, applied and recorded, and the
worker is killed before COMMIT (fault point `job.batch_before_commit`). Nothing of the batch
survives; a new worker then applies every job exactly once: no lost and no doubled outcome."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from backend.audit.models import AuditEntry
from backend.audit.verify import unit_verify
from backend.events.models import OutboxEvent, UnitSequence
from backend.jobs.models import Job, JobStatus
from backend.notifications.models import Notification
from backend.records.models import Crate
from bench import processes
from tests.support.factories import CrateFactory, UnitFactory, UserFactory
from tests.support.pipeline import wait_until
from tests.support.queues import enqueue_on

from .test_crash_recovery import kill_when_printed, wait_out_the_visibility_timeout

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = 5


def test_a_worker_killed_mid_batch_leaves_nothing_and_its_successor_applies_each_job_once(
    api, crash_env, private_queue, own_processes
):
    # given five store users of a unit, each with a relocation queued (no worker running yet)
    unit = UnitFactory()
    before = UnitSequence.objects.filter(unit=unit).values_list("last_seq", flat=True).first() or 0
    made = []
    with enqueue_on(private_queue):
        for i in range(JOBS):
            user = UserFactory(unit=unit, role=Role.STORE)
            crate = CrateFactory(unit=unit)
            answer = api(user).post(f"/api/crates/{crate.id}/relocate/", {"location": f"Bay {i}", "version": 1},
                                    format="json")
            assert answer.status_code == 202, answer.content
            made.append((answer.json()["job"]["id"], crate, user))
    ids = [job_id for job_id, _, _ in made]

    # when a worker takes them as one batch and is SIGKILLed (its whole process group) before COMMIT
    doomed = processes.start_worker(
        {**crash_env, "FAULT_POINTS": "job.batch_before_commit=pause:20"}, name="doomed", queues=private_queue
    )
    own_processes.append(doomed)
    killed_at = kill_when_printed(doomed, f"fault point job.batch_before_commit reached (pause) job={ids[0]} jobs={JOBS}")

    # then nothing of the batch survived: the delivered job still running (held by the dead worker),
    # the others still queued, no crate moved, no entry, no event, no notification
    statuses = dict(Job.objects.filter(id__in=ids).values_list("id", "status"))
    assert {str(k): v for k, v in statuses.items()} == {
        job_id: JobStatus.RUNNING if job_id == ids[0] else JobStatus.QUEUED for job_id in ids
    }
    assert set(Crate.objects.filter(unit=unit).values_list("version", flat=True)) == {1}
    assert not AuditEntry.objects.filter(unit=unit, action="relocated").exists()
    assert (UnitSequence.objects.filter(unit=unit).values_list("last_seq", flat=True).first() or 0) == before
    assert not Notification.objects.filter(link_id__in=ids).exists()

    # when a new worker starts after the visibility timeout (the first job's message is redelivered,
    # the other four were never taken off the queue)
    wait_out_the_visibility_timeout(killed_at)
    successor = processes.start_worker(crash_env, name="successor", queues=private_queue)
    own_processes.append(successor)

    # then every job succeeded, and each message ran (the ones a batch had applied as no-ops)
    wait_until(lambda: set(Job.objects.filter(id__in=ids).values_list("status", flat=True)) == {JobStatus.SUCCEEDED},
               40, "every job of the batch to succeed")
    wait_until(lambda: successor.output().count("succeeded in") >= JOBS, 30, "every task message to run")
    # and each job's effect happened exactly once: one version bump, one entry (its own actor and
    # job), one event, one notification, each with its own result
    for i, (job_id, crate, user) in enumerate(made):
        crate.refresh_from_db()
        assert (crate.location, crate.version) == (f"Bay {i}", 2)
        job = Job.objects.get(id=job_id)
        assert job.result == {"id": str(crate.id), "location": f"Bay {i}", "version": 2}
        (entry,) = AuditEntry.objects.filter(record_id=crate.id, action="relocated")
        assert (str(entry.job_id), entry.actor_id) == (job_id, user.id)
        assert OutboxEvent.objects.filter(object_id=crate.id, action="updated").count() == 1
        assert Notification.objects.filter(user=user, link_id=job_id).count() == 1
    assert UnitSequence.objects.get(unit=unit).last_seq == before + JOBS
    assert unit_verify(unit.id, unit.code, keys={}).ok
