"""Audit-trail review (EU GMP Annex 11 §9: audit trails "regularly reviewed"), over HTTP: QA signs
off the unit's entries up to a moment (signature meaning `reviewed`, with a comment), the entries
show `reviewed`, the reviewer's own entries stay unreviewed until someone else reviews them (four
eyes), and an overdue review notifies the unit's QA and admins and shows in the metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.audit.metrics import AuditCollector
from backend.audit.models import AuditEntry, AuditReview, Signature
from backend.events.models import OutboxEvent
from backend.notifications.models import Notification
from backend.records.services.reviews import reviews_due_notify
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request

pytestmark = pytest.mark.django_db


def _review(through=None, comment="Monthly review: no anomalies", meaning="reviewed", password=PASSWORD) -> dict:
    through = through or timezone.now()
    return {"through": through.isoformat(), "comment": comment,
            "signature": {"password": password, "meaning": meaning}}


@pytest.fixture
def unit():
    unit = UnitFactory(code="rev")
    people = {
        "requester": UserFactory(unit=unit, role=Role.REQUESTER),
        "qa": UserFactory(unit=unit, role=Role.QA, first_name="Quinn", last_name="Quality"),
        "qa2": UserFactory(unit=unit, role=Role.QA),
        "admin": UserFactory(unit=unit, role=Role.ADMIN),
        "store": UserFactory(unit=unit, role=Role.STORE),
    }
    return unit, people


def _trail(client, **query) -> dict[int, bool]:
    rows = client.get("/api/audit-trail/", {"page_size": 200, **query}).json()["results"]
    return {row["position"]: row["reviewed"] for row in rows}


def _own_entry(user):
    """An entry `user` made (QA places a hold: the one thing QA writes besides reviews)."""
    from backend.accounts.signatures import signature_sign
    from backend.records.services.holds import hold_place

    crate = CrateFactory(unit=user.unit)
    signature = signature_sign(user=user, password=PASSWORD, meaning="hold", expected="hold", action="hold",
                               entity="legal_hold", unit_id=user.unit_id)
    hold_place(actor=user, crate_ids=[crate.id], reason="litigation", signature=signature)


def test_qa_signs_off_the_trail_and_its_own_entries_stay_unreviewed(api, unit):
    unit, people = unit
    make_request("withdrawal", people["requester"])
    _own_entry(people["qa"])
    through = timezone.now()
    make_request("withdrawal", people["requester"])  # after `through`: not in this review
    client = api(people["qa"])

    answer = client.post("/api/audit-reviews/", _review(through), format="json")

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert set(body) >= {"id", "unit", "from_position", "through_position", "reviewer", "signed_at", "comment"}
    assert body["reviewer"]["full_name"] == "Quinn Quality" and body["unit"] == str(unit.id)
    entries = AuditEntry.objects.filter(unit=unit)
    mine = set(entries.filter(actor_id=people["qa"].id).values_list("position", flat=True))
    covered = set(entries.filter(at__lte=through).values_list("position", flat=True))
    assert (body["from_position"], body["through_position"]) == (min(covered), max(covered))
    shown = _trail(client)
    for position, reviewed in shown.items():
        expected = position in covered and position not in mine
        assert reviewed is expected, position
    assert body["entries"] == len(covered - mine)
    # signed (meaning `reviewed`), audited and broadcast
    entry = AuditEntry.objects.get(entity="audit_review", action="reviewed")
    assert entry.signature.meaning == "reviewed" and entry.reason == "Monthly review: no anomalies"
    assert entry.actor_id == people["qa"].id and shown[entry.position] is False
    assert OutboxEvent.objects.filter(unit=unit, entity="audit_review", action="created").exists()
    # `?reviewed=false` is what is still waiting
    waiting = _trail(client, reviewed="false")
    assert waiting and not any(waiting.values()) and set(waiting) == {p for p, r in shown.items() if not r}
    assert client.get("/api/audit-reviews/").json()["results"][0]["id"] == body["id"]


def test_four_eyes_someone_else_reviews_the_reviewers_own_entries(api, unit):
    unit, people = unit
    make_request("withdrawal", people["requester"])
    _own_entry(people["qa"])
    first = api(people["qa"]).post("/api/audit-reviews/", _review(), format="json").json()
    # the first reviewer cannot sign off what is left: only their own entries (and their review's)
    again = api(people["qa"]).post("/api/audit-reviews/", _review(), format="json")
    assert (again.status_code, again.json()["code"]) == (400, "nothing_to_review")

    second = api(people["qa2"]).post("/api/audit-reviews/", _review(), format="json")

    assert second.status_code == 201, second.content
    own = AuditEntry.objects.filter(unit=unit, actor_id=people["qa"].id).order_by("position")
    assert second.json()["from_position"] == own.first().position
    assert second.json()["from_position"] <= first["through_position"]
    shown = _trail(api(people["admin"]))
    assert all(shown[e.position] for e in own)  # now reviewed, by someone else
    by_qa2 = AuditEntry.objects.filter(unit=unit, actor_id=people["qa2"].id)
    assert by_qa2 and not any(shown[e.position] for e in by_qa2)  # qa2's own review entry waits


@pytest.mark.parametrize(("role", "body", "status", "code"), [
    ("requester", {}, 403, "permission_denied"),
    ("store", {}, 403, "permission_denied"),
    ("qa", {"comment": " "}, 400, "comment_required"),
    ("qa", {"meaning": "approved"}, 400, "signature_required"),
    ("qa", {"password": "wrong"}, 403, "signature_invalid"),
    ("qa", {"through": "future"}, 400, "invalid"),
])
def test_a_review_is_refused_without_role_comment_or_valid_signature(api, unit, role, body, status, code):
    unit, people = unit
    make_request("withdrawal", people["requester"])
    through = timezone.now() + timedelta(days=1) if body.get("through") else None
    payload = _review(through, **{k: v for k, v in body.items() if k != "through"})
    answer = api(people[role]).post("/api/audit-reviews/", payload, format="json")
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.content
    assert not AuditReview.objects.exists()
    if code != "signature_invalid":
        assert not Signature.objects.exists()  # refused before a password was checked


def test_admins_review_too(api, unit):
    unit, people = unit
    make_request("withdrawal", people["requester"])
    assert api(people["admin"]).post("/api/audit-reviews/", _review(), format="json").status_code == 201


def test_reviews_are_unit_scoped(api, unit):
    unit, people = unit
    make_request("withdrawal", people["requester"])
    other = UnitFactory(code="elsewhere")
    stranger_qa = UserFactory(unit=other, role=Role.QA)
    make_request("withdrawal", UserFactory(unit=other, role=Role.REQUESTER))
    review = api(people["qa"]).post("/api/audit-reviews/", _review(), format="json").json()
    stranger = api(stranger_qa)

    assert stranger.get("/api/audit-reviews/").json()["results"] == []
    assert stranger.get(f"/api/audit-reviews/{review['id']}/").status_code == 404
    assert not any(_trail(stranger).values())  # my review reviewed none of their entries
    assert stranger.post("/api/audit-reviews/", _review(), format="json").json()["unit"] == str(other.id)
    assert api().get("/api/audit-reviews/").status_code == 401


def test_an_overdue_review_notifies_qa_and_admins_once_and_shows_in_the_metrics(unit, settings):
    unit, people = unit
    settings.AUDIT_REVIEW_DAYS = 30
    make_request("withdrawal", people["requester"])

    def overdue_metric() -> float:
        for family in AuditCollector().collect():
            if family.name == "records_audit_review_overdue":
                return next(s.value for s in family.samples if s.labels["unit"] == unit.code)
        raise AssertionError("no records_audit_review_overdue")

    assert reviews_due_notify() == 0 and overdue_metric() == 0  # not yet due
    settings.AUDIT_REVIEW_DAYS = 0  # (the entries are now older than the period: overdue)
    written = reviews_due_notify()
    again = reviews_due_notify()  # (the next hourly run: no second notice the same day)

    told = set(Notification.objects.filter(kind="audit_review_due").values_list("user_id", flat=True))
    assert told == {people["qa"].id, people["qa2"].id, people["admin"].id}
    assert written == 3 and again == 0
    assert overdue_metric() == 1


# --- the rule, over any sequence of entries and reviews (Hypothesis) --------------------------------

STEPS = st.lists(
    st.one_of(st.tuples(st.just("write"), st.integers(0, 3)), st.tuples(st.just("review"), st.integers(0, 2))),
    min_size=1, max_size=20,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_an_entry_is_reviewed_exactly_when_someone_else_signed_it_off(steps):
    """Entries by three people (and the system) and reviews by any of them, in any order: after each
    review by R, every entry up to then not R's is reviewed, and R's own are reviewed only if someone
    else covered them; nothing is skipped however the watermark moves; a review with nothing of
    someone else's waiting is refused."""
    from django.db import transaction

    from backend.audit.reviews import review_write, with_reviewed
    from backend.audit.services import Entry, journal_write
    from backend.common.errors import ValidationFailed

    unit = UnitFactory()
    people = [UserFactory(unit=unit, role=Role.QA) for _ in range(3)]
    actors: dict[int, object] = {}  # position -> actor id (None: the system)
    reviewed: set[int] = set()
    for kind, who in steps:
        if kind == "write":
            actor = people[who] if who < 3 else None
            with transaction.atomic():
                (entry,) = journal_write(actor=actor, entries=[Entry(
                    unit_id=unit.id, entity="crate", record_id=unit.id, record_number="X", action="updated")])
            actors[entry.position] = actor.id if actor else None
            continue
        reviewer = people[who]
        waiting = {p for p, a in actors.items() if p not in reviewed and a != reviewer.id}
        signature = Signature.objects.create(
            unit_id=unit.id, signer_id=reviewer.id, signer_username=reviewer.username, signer_full_name="R",
            meaning="reviewed", action="review", entity="audit_review", signed_at=timezone.now())
        try:
            with transaction.atomic():
                review = review_write(reviewer=reviewer, unit_id=unit.id, through=timezone.now(), comment="c",
                                      signature=signature)
        except ValidationFailed as refused:
            assert refused.code == "nothing_to_review" and not waiting
            continue
        assert waiting and review.entries == len(waiting)
        reviewed |= waiting
        actors[max(actors) + 1] = reviewer.id  # the review's own entry
        shown = dict(with_reviewed(AuditEntry.objects.filter(unit=unit)).values_list("position", "reviewed"))
        assert {p for p, r in shown.items() if r} == reviewed
