"""The records' read side where a bound matters: a `mine` filter's ids are read from four tables
(withdrawals, destructions, transfers, send-back records) within one budget, never one per table."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.accounts.models import Role
from backend.records.models import SendBackRecord
from backend.records.selectors import mine_request_ids
from tests.support.factories import UnitFactory, UserFactory, pending_requests_fast

pytestmark = pytest.mark.django_db


def test_mine_ids_read_at_most_the_limit_across_tables():
    # given a requester with 3 requests of each kind, and 3 more they sent back as an approver would
    # (the send-back records: a resubmission clears decided_by, the record keeps who)
    unit = UnitFactory()
    user = UserFactory(unit=unit, role=Role.ADMIN)
    for entity in ("withdrawal", "destruction", "transfer"):
        pending_requests_fast(entity, user, 3)
    SendBackRecord.objects.bulk_create(
        SendBackRecord(entity="withdrawal", request_id=uuid.uuid4(), unit=unit, reason="r", created_by=user) for _ in range(3)
    )

    # when a `mine` filter is resolved with a budget of 7 ids (12 would match)
    with CaptureQueriesContext(connection) as queries:
        ids = mine_request_ids(str(user.id), str(unit.id), 7)

    # then 7 ids come back, read by queries whose limits add up to the budget and no more: the first
    # table's 3 (of a limit of 7), the second's 3 (of the 4 left), the third's 1 (of the 1 left);
    # the send-back records are not read at all
    limits = [int(n) for q in queries.captured_queries for n in re.findall(r"\bLIMIT (\d+)", q["sql"])]
    assert len(ids) == 7
    assert limits == [7, 4, 1], limits
    assert not any("sendback" in q["sql"].lower() for q in queries.captured_queries)

    # and with room for everything, all 12 come back: the bound is the budget, not a cut per table
    assert len(mine_request_ids(str(user.id), str(unit.id), 100)) == 12
