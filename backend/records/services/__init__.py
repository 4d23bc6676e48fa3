"""Services: the only code that changes records. Each call is one transaction that locks what it
changes, checks role, version and transition, bumps `version`, and writes its outbox events.
Entry points (API views, job kinds, management commands) call exactly one of these."""

from .crates import (
    crate_create,
    crate_delete,
    crate_relocate,
    crate_relocate_check,
    crate_update,
    crates_create_bulk,
    crates_relocate_batch,
)
from .requests import request_create, request_delete, request_update, requests_create_bulk
from .transitions import request_transition, request_transition_check, requests_transition, transition_precheck

__all__ = [
    "crate_create", "crate_delete", "crate_relocate", "crate_relocate_check", "crate_update", "crates_create_bulk",
    "crates_relocate_batch",
    "request_create", "request_delete", "request_update", "requests_create_bulk",
    "request_transition", "request_transition_check", "requests_transition", "transition_precheck",
]
