"""Signing decisions in tests as a decider does: with their password and the action's meaning.

A decision (approve, reject, send back) is refused without a signature, so every test that decides
signs, through the same service (`signature_sign`) or the same request body the API takes."""

from __future__ import annotations

from backend.accounts.signatures import MEANINGS, signature_sign

from .factories import PASSWORD


def _action(action: str) -> str:
    return action.replace("-", "_")


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
    return signature_sign(
        user=actor, password=password, meaning=MEANINGS[action], action=action, entity=entity,
        unit_id=unit_id or actor.unit_id,
    ).id
