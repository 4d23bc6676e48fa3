"""Signing decisions in tests as a decider does: with their password and the action's meaning.

A decision (approve, reject, send back) is refused without a signature, so every test that decides
signs, through the same service (`signature_sign`) or the same request body the API takes."""

from __future__ import annotations

from backend.accounts.signatures import signature_sign
from backend.records.actions import ACTIONS, action_named

from .factories import PASSWORD

# What each decision means when signed, from the records' one vocabulary table.
MEANINGS = {a.name: a.meaning for a in ACTIONS.values() if a.decision}


def _action(action: str) -> str:
    named = action_named(action)
    return named.name if named else action


def _printed_name(actor) -> None:
    """Signing needs a printed name: tests that sign as a role that does not sign (to see the
    decision refused for its role, after the signature) give the signer one first."""
    if not (actor.get_full_name() or "").strip():
        type(actor).objects.filter(id=actor.id).update(first_name=actor.role.title(), last_name="Signer")
        actor.first_name, actor.last_name = actor.role.title(), "Signer"


def signed(action: str, body: dict | None = None, *, password: str = PASSWORD) -> dict:
    """`body` for POST …/{action}/ or /api/bulk-actions/, with the decider's signature when the
    action is a decision (other actions are returned unchanged)."""
    body = dict(body or {})
    meaning = MEANINGS.get(_action(action))
    if meaning:
        body["signature"] = {"password": password, "meaning": meaning}
    return body


def sign(actor, entity: str, action: str, *, unit_id=None, password: str = PASSWORD):
    """The id of a fresh signature of `actor` for `action` on a request of `entity`, as the API
    records it before queueing the decision; None for an action that is not signed."""
    action = _action(action)
    if action not in MEANINGS:
        return None
    _printed_name(actor)
    return signature_sign(
        user=actor, password=password, meaning=MEANINGS[action], expected=MEANINGS[action], action=action,
        entity=entity, unit_id=unit_id or actor.unit_id,
    ).id


def decided(actor, entity: str, action: str, ids, *, reason: str = "", versions: dict | None = None,
            password: str = PASSWORD):
    """Queue a bulk `action` on `ids` through the one decision use case, signed by `actor` as the
    bulk API does (the job's task is not sent: tests run it in-process with job_execute)."""
    from unittest import mock

    from backend.records.decisions import Decision, decide_many

    named = action_named(action)
    with mock.patch("backend.jobs.queue.enqueue"):
        return decide_many(
            Decision(entity=entity, action=action, actor=actor, reason=reason, versions=dict(versions or {}),
                     password=password if named and named.decision else None,
                     meaning=named.meaning if named else None),
            [str(i) for i in ids],
        )


def transition_now(**kwargs):
    """`services.request_transition` by a test that decides on the request as it is now: the
    decision is pinned to the current version, as the API pins one whose caller sent none."""
    from backend.records import services
    from backend.records.lifecycle import request_kind

    if kwargs.get("expected_version") is None:
        model = request_kind(kwargs["entity"]).model
        kwargs["expected_version"] = model.objects.values_list("version", flat=True).get(id=kwargs["request_id"])
    return services.request_transition(**kwargs)


def sign_act(actor, act: str, *, password: str = PASSWORD):
    """A fresh signature of `actor` for a signed act that is not a request decision (`hold`,
    `release`, `review`: backend.records.actions.SIGNED_ACTS), as its endpoint records it."""
    from backend.audit.reviews import ENTITY as REVIEW_ENTITY
    from backend.records.actions import SIGNED_ACTS
    from backend.records.services.holds import ENTITY as HOLD_ENTITY

    meaning = SIGNED_ACTS[act].meaning
    return signature_sign(
        user=actor, password=password, meaning=meaning, expected=meaning, action=act,
        entity=REVIEW_ENTITY if act == "review" else HOLD_ENTITY, unit_id=actor.unit_id,
    )
