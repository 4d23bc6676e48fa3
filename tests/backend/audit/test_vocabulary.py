"""Every action in the audit trail has a word people read it by: the trail refuses an entry whose
action no app registered (backend/audit/vocabulary.py), so what the console receives covers it all."""

from __future__ import annotations

import pytest
from django.db import transaction

from backend.audit.models import AuditEntry
from backend.audit.services import Entry, journal_write
from backend.audit.vocabulary import action_words, actions_register
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_trail_refuses_an_action_without_a_word():
    user = UserFactory()
    with pytest.raises(ValueError, match="not registered: 'shredded'"), transaction.atomic():
        journal_write(actor=user, entries=[Entry(
            unit_id=user.unit_id, entity="crate", record_id=user.id, record_number="CR-1", action="shredded",
        )])
    assert not AuditEntry.objects.filter(action="shredded").exists()


def test_an_action_keeps_the_one_word_it_was_registered_with():
    word = action_words()["created"]
    actions_register({"created": word})  # the same again: fine
    with pytest.raises(ValueError, match="already"):
        actions_register({"created": "Made"})
    assert action_words()["created"] == word
