"""Task entry points: look up ids, call one service. Names are what operators see in Flower."""

from backend.jobs.bulk import bulk_run
from backend.jobs.services import job_run

from .base import records_task
from .outbox import outbox_prune, outbox_sweep


def _run(job_id: str, **_display) -> None:
    job_run(job_id=job_id)


request_approve = records_task("requests.approve")(_run)
request_reject = records_task("requests.reject")(_run)
request_send_back = records_task("requests.send_back")(_run)
request_resubmit = records_task("requests.resubmit")(_run)
crate_relocate = records_task("crates.relocate")(_run)


@records_task("bulk.apply", queue="bulk", bind=True)
def bulk_apply(self, job_id: str, **_display) -> str:
    # Progress as a custom task event: Flower shows the task in state PROGRESS with the counts in
    # its result column while it runs, and the final counts once it succeeds.
    def progress(counts: dict) -> None:
        self.send_event("task-progress", result=progress_text(counts), **counts)

    job = bulk_run(job_id=job_id, on_progress=progress)
    return progress_text(job.progress) if job is not None else "no such job"


def progress_text(counts: dict) -> str:
    return f"{counts['done']}/{counts['total']} done, {counts['failed']} failed"


@records_task("outbox.sweep", time_limit=60, max_retries=0)
def sweep() -> int:
    return outbox_sweep()


@records_task("outbox.prune", time_limit=300, max_retries=0)
def prune() -> int:
    return outbox_prune()
