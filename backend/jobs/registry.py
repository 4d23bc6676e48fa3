"""Job kinds, each declared once: its name, what it does, what refuses it up front, and its queue.

A domain app registers its kinds when Django starts (`AppConfig.ready`); everything else reads them
from here instead of building or parsing kind strings: the views that queue jobs, the worker (one
Celery task per kind, named after it), the task router, the bulk API and the batch CLI's server side.

A kind's `apply` runs inside the job's transaction, with the job row locked, for a list of targets
(one for a single job, a chunk of up to BULK_CHUNK_SIZE for a bulk job). It returns every target's
outcome: a result dict, or the DomainError that refused it. A refused target's change must have
written nothing (a kind may record why it refused: a signed decision's trail says its signature was
not applied); the others' changes commit together with the job's bookkeeping. Jobs know nothing of
what their kinds do: no entities, actions or signatures here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Imported before Django is set up (by the Celery app's router): no models at import time.
if TYPE_CHECKING:
    from backend.accounts.models import User

# A target's outcome: the result dict, or the DomainError (an Exception) that refused it.
Outcome = dict[str, Any] | Exception
Apply = Callable[["User", list[str], dict[str, Any]], dict[str, Outcome]]
Precheck = Callable[["User", dict[str, Any]], None]


@dataclass(frozen=True)
class Work:
    """One job of a batch (`JobKind.apply_batch`): a single job's one target, with who asked for it
    and where from (its audit entry records both)."""

    job_id: Any  # uuid.UUID
    actor: Any  # accounts.User
    target: str
    params: dict[str, Any]
    client_ip: str = ""
    user_agent: str = ""


# Several single jobs of one kind and one unit applied together, in one transaction: returns each
# job's outcome by job id (a result dict, or the DomainError that refused it, having written
# nothing); raises if something unexpected happened (the batch is then rolled back and its jobs run
# one by one: backend.jobs.batches.job_execute_batch).
ApplyBatch = Callable[[list[Work]], dict[Any, Outcome]]


def _no_precheck(actor: User, params: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class JobKind:
    name: str  # the Job's `kind` and the Celery task's name, e.g. "withdrawal.approve"
    apply: Apply = field(repr=False, compare=False)
    # What refuses the job whatever its targets (role, a missing reason): run before it is queued.
    precheck: Precheck = field(default=_no_precheck, repr=False, compare=False)
    queue: str = "default"
    # A bulk kind records an outcome per target, runs in chunks and succeeds once every target has
    # an outcome; a single kind has one target and fails with that target's error.
    bulk: bool = False
    # Set for a single kind whose queued jobs the worker may apply several at a time (issue 30).
    apply_batch: ApplyBatch | None = field(default=None, repr=False, compare=False)


_KINDS: dict[str, JobKind] = {}


def register(*kinds: JobKind) -> None:
    for kind in kinds:
        known = _KINDS.get(kind.name)
        if known is not None and known.apply is not kind.apply:
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        _KINDS[kind.name] = kind


def get(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(f"no job kind {name!r}; registered: {', '.join(sorted(_KINDS))}") from None


def find(name: str) -> JobKind | None:
    return _KINDS.get(name)


def kinds() -> list[JobKind]:
    return sorted(_KINDS.values(), key=lambda kind: kind.name)


def bulk_kind_names() -> list[str]:
    return sorted(k.name for k in _KINDS.values() if k.bulk)


def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict | None:
    """Celery task router: a job kind's task goes to its kind's queue."""
    kind = _KINDS.get(name)
    return {"queue": kind.queue} if kind is not None else None
