"""The set-based job path (issue 30): a worker applies several queued relocation jobs of one unit
together, in one transaction with a fixed number of statements, and each job keeps its own outcome,
exactly-once effect, audit entry, event and notification; a refused or poisoned job does not fail
its neighbours. (The same under a worker SIGKILLed mid-batch: tests/workers/test_batch_crash.py.)"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.accounts.models import Role
from backend.audit.models import AuditEntry
from backend.audit.verify import unit_verify
from backend.events.models import OutboxEvent
from backend.jobs import registry
from backend.jobs.batches import job_execute_batch
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_execute
from backend.notifications.models import Notification
from backend.records.models import Crate
from tests.support.factories import CrateFactory, UnitFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

RELOCATE = "crate.relocate"


def relocations(api, unit, count: int, **body) -> list[tuple[Job, Crate, object]]:
    """`count` store users of `unit`, each queueing the relocation of a crate of their own."""
    made = []
    for i in range(count):
        user = UserFactory(unit=unit, role=Role.STORE)
        crate = CrateFactory(unit=unit)
        answer = api(user).post(f"/api/crates/{crate.id}/relocate/", {"location": f"Bay {i}", "version": 1, **body},
                                format="json")
        assert answer.status_code == 202, answer.content
        made.append((Job.objects.get(id=answer.json()["job"]["id"]), crate, user))
    return made


def run_batch(job: Job) -> Job:
    return job_execute_batch(kind=registry.get(RELOCATE), job_id=str(job.id), worker="w@h")


def test_queued_relocations_of_a_unit_are_applied_together_each_with_its_own_outcome_entry_and_notice(api, enqueued):
    # given five store users of a unit, each with a queued relocation of their own crate
    unit = UnitFactory()
    made = relocations(api, unit, 5)

    # when the worker runs the first job's task
    first = run_batch(made[0][0])

    # then all five are done, each with its own result, one attempt, its crate moved once
    assert first.status == JobStatus.SUCCEEDED
    for i, (job, crate, user) in enumerate(made):
        job.refresh_from_db()
        crate.refresh_from_db()
        assert (job.status, job.attempts, job.worker) == (JobStatus.SUCCEEDED, 1, "w@h")
        assert job.result == {"id": str(crate.id), "location": f"Bay {i}", "version": 2}
        assert (crate.location, crate.version) == (f"Bay {i}", 2)
        # its own audit entry: its actor, its job, the relocation's diff
        (entry,) = AuditEntry.objects.filter(record_id=crate.id, action="relocated")
        assert (entry.actor_id, entry.job_id, entry.version) == (user.id, job.id, 2)
        assert entry.changes["location"][1] == f"Bay {i}"
        # its own event and notification
        assert OutboxEvent.objects.filter(object_id=crate.id, action="updated").count() == 1
        assert Notification.objects.filter(user=user, link_id=job.id).count() == 1
    # and the unit's chain is whole
    assert unit_verify(unit.id, unit.code, keys={}).ok

    # when the other jobs' own task messages arrive afterwards
    for job, _, _ in made[1:]:
        run_batch(job)

    # then they are no-ops (one read each): nothing applied twice, no attempt counted
    assert set(Crate.objects.filter(unit=unit).values_list("version", flat=True)) == {2}
    assert AuditEntry.objects.filter(unit=unit, action="relocated").count() == 5
    assert set(Job.objects.filter(kind=RELOCATE).values_list("attempts", flat=True)) == {1}


def test_a_batch_costs_the_same_statements_for_two_jobs_as_for_eight(api, enqueued):
    def statements_for(count: int) -> list[str]:
        unit = UnitFactory()
        warm = relocations(api, unit, 1)  # the unit's counter and chain exist: the steady state
        run_batch(warm[0][0])
        made = relocations(api, unit, count)
        with CaptureQueriesContext(connection) as run:
            run_batch(made[0][0])
        assert set(Job.objects.filter(id__in=[j.id for j, _, _ in made]).values_list("status", flat=True)) == {"succeeded"}
        return [q["sql"].split(" ", 1)[0] for q in run.captured_queries]

    two, eight = statements_for(2), statements_for(8)

    # one transaction: the jobs, the crates, their UPDATE, the counter, the chain head, the outbox, the
    # entries, the notifications, the jobs' completion; then the events marked published
    assert two == eight == [
        "UPDATE",  # the delivered job marked running by this worker, unless finished (most deliveries of a batched kind)
        "SELECT",  # read back: finished already (nothing more), or its running push
        "BEGIN",
        "SELECT", "SELECT",  # the delivered job, locked; the other queued jobs, SKIP LOCKED
        "SELECT", "UPDATE",  # the crates, locked and changed
        "SELECT", "UPDATE",  # the unit's counter, locked and advanced (once)
        "SELECT",  # the audit chain's head (once)
        "INSERT", "INSERT",  # outbox events, audit entries
        "SELECT", "INSERT",  # the recipients' units, the notifications
        "UPDATE",  # the jobs' completion
        "COMMIT",
        "UPDATE",  # published_at
    ]


def test_a_refused_job_in_a_batch_fails_alone_and_writes_nothing(api, enqueued):
    # given three queued relocations, the middle one pinned to a version its crate no longer has
    unit = UnitFactory()
    made = relocations(api, unit, 3)
    stale_job, stale_crate, _ = made[1]
    Crate.objects.filter(id=stale_crate.id).update(version=7)

    # when they run as a batch
    run_batch(made[0][0])

    # then the stale one failed with its own error and nothing of it was written; the others applied
    stale_job.refresh_from_db()
    assert (stale_job.status, stale_job.error["code"]) == (JobStatus.FAILED, "stale_version")
    assert not AuditEntry.objects.filter(record_id=stale_crate.id, action="relocated").exists()
    for job, crate, _ in (made[0], made[2]):
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED
        assert Crate.objects.get(id=crate.id).version == 2


@pytest.mark.parametrize("poisoned_at", [0, 2], ids=["the delivered job", "a neighbour"])
def test_a_poisoned_job_leaves_its_neighbours_applied(api, enqueued, poisoned_at):
    # given four queued relocations, one of them poisoned: its row carries params the API never
    # writes (a reason that is not text), which makes its change raise, not refuse
    unit = UnitFactory()
    made = relocations(api, unit, 4)
    poisoned, poisoned_crate, _ = made[poisoned_at]
    Job.objects.filter(id=poisoned.id).update(params={**poisoned.params, "reason": 12345})

    # when the worker runs the first job's task
    if poisoned_at == 0:
        with pytest.raises(AttributeError):  # the delivered job's own error goes to its task (retries)
            run_batch(made[0][0])
    else:
        run_batch(made[0][0])

    # then every neighbour is applied once, with its own entry (the delivered job after two attempts:
    # the batch's, rolled back, and its own)
    for job, crate, _ in made:
        if job.id == poisoned.id:
            continue
        job.refresh_from_db()
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2 if job.id == made[0][0].id else 1)
        assert Crate.objects.get(id=crate.id).version == 2
        assert AuditEntry.objects.filter(record_id=crate.id, action="relocated").count() == 1
    # and the poisoned job changed nothing; it is not finished, so its own task (its retries, then
    # its failure handler) decides its end
    poisoned.refresh_from_db()
    assert poisoned.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert Crate.objects.get(id=poisoned_crate.id).version == 1
    assert not AuditEntry.objects.filter(record_id=poisoned_crate.id, action="relocated").exists()
    assert unit_verify(unit.id, unit.code, keys={}).ok


def test_only_queued_jobs_of_the_same_kind_and_unit_are_taken(api, enqueued):
    # given queued relocations in two units, and one job of the unit already finished
    unit, other = UnitFactory(), UnitFactory()
    mine, theirs = relocations(api, unit, 3), relocations(api, other, 2)
    job_execute(job_id=str(mine[2][0].id), worker="w@h")

    # when a batch runs in the first unit
    run_batch(mine[0][0])

    # then it applied its unit's queued jobs only
    statuses = dict(Job.objects.values_list("id", "status"))
    assert [statuses[j.id] for j, _, _ in mine] == [JobStatus.SUCCEEDED] * 3
    assert [statuses[j.id] for j, _, _ in theirs] == [JobStatus.QUEUED] * 2
    assert Job.objects.get(id=mine[2][0].id).attempts == 1  # the finished one was not taken again


def test_batches_off_runs_one_job_at_a_time(api, enqueued, settings):
    settings.JOB_BATCH_MAX = 1
    unit = UnitFactory()
    made = relocations(api, unit, 3)
    run_batch(made[0][0])
    assert [Job.objects.get(id=j.id).status for j, _, _ in made] == [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.QUEUED]
