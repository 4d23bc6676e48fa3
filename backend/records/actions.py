"""The request actions and every way they are spelled: the one vocabulary table.

Plain Python (no Django import), so the batch CLI reads the same table as the server. Each action
has one canonical `name` (`send_back`), the spelling of its URL and of the bulk API (`send-back`;
both spellings are accepted there and mean the same action), the audit trail's past tense, the
meaning a signature on it must declare (None: not a signed decision), and the word notifications use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    name: str
    path: str
    past: str
    meaning: str | None
    notice: str

    @property
    def decision(self) -> bool:
        """A decision is signed, and never taken by whoever filed or changed the request."""
        return self.meaning is not None

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def word(self) -> str:
        """How its audit entry reads ("Sent back")."""
        return self.notice[:1].upper() + self.notice[1:]

    def spelled(self) -> dict[str, str | None]:
        """Every spelling of it, as a client receives them (the console's page: realtime/views.py)."""
        return {"name": self.name, "path": self.path, "label": self.label[:1].upper() + self.label[1:],
                "past": self.past, "meaning": self.meaning, "notice": self.notice, "word": self.word}


APPROVE = Action("approve", "approve", "approved", "approved", "approved")
REJECT = Action("reject", "reject", "rejected", "rejected", "rejected")
SEND_BACK = Action("send_back", "send-back", "sent_back", "returned", "sent back")
RESUBMIT = Action("resubmit", "resubmit", "resubmitted", None, "resubmitted")

ACTIONS: dict[str, Action] = {a.name: a for a in (APPROVE, REJECT, SEND_BACK, RESUBMIT)}

# Signed acts that are not request transitions (no URL of the request API; `path` is their own
# endpoint's last word): a legal hold placed and released (backend.records.services.holds), and an
# audit-trail review (backend.records.services.reviews). Their meanings are defined here with the
# decisions': one table of every meaning a signature can declare.
HOLD = Action("hold", "legal-holds", "hold_placed", "hold", "placed on hold")
RELEASE = Action("release", "release", "hold_released", "released", "released from hold")
REVIEW = Action("review", "audit-reviews", "reviewed", "reviewed", "reviewed")
SIGNED_ACTS: dict[str, Action] = {a.name: a for a in (HOLD, RELEASE, REVIEW)}
MEANINGS: tuple[str, ...] = tuple(a.meaning for a in (*ACTIONS.values(), *SIGNED_ACTS.values()) if a.meaning)
_SPELLINGS: dict[str, Action] = {**ACTIONS, **{a.path: a for a in ACTIONS.values()}}
SPELLINGS: tuple[str, ...] = tuple(sorted(_SPELLINGS))


# The word of every audit action the records write (backend/audit/vocabulary.py, registered when the
# app is ready): the past tenses above, and the lifecycle's other entries.
ENTRY_WORDS: dict[str, str] = {
    **{a.past: a.word for a in (*ACTIONS.values(), *SIGNED_ACTS.values())},
    "created": "Created", "updated": "Updated", "deleted": "Deleted", "relocated": "Relocated",
    "withdrawn": "Withdrawn", "destroyed": "Destroyed", "transferred": "Transferred out", "received": "Received",
    "placed": "Hold placed", "released": "Hold released", "printed": "Printed",
    "signature_not_applied": "Signature not applied (the request changed, or was refused)",
}


def vocabulary() -> dict[str, dict[str, dict[str, str | None]]]:
    """The request actions and the other signed acts, every spelling of each: what a client shows."""
    return {"actions": {a.name: a.spelled() for a in ACTIONS.values()},
            "acts": {a.name: a.spelled() for a in SIGNED_ACTS.values()}}


def action_named(spelling: str) -> Action | None:
    """The action `spelling` names (its name or its URL spelling), or None."""
    return _SPELLINGS.get(spelling) if isinstance(spelling, str) else None
