"""From a list to live without a gap (docs/realtime.md, "From a list to live"), in the style of
Zulip's `verify_action`: generated changes, made through the real services, race a client that
reads its unit's lists; the client then resumes over a real WebSocket from the lists' `X-Records-Seq`.

Two oracles, each of which a torn read fails:
- exactness: a list with `X-Records-Seq: n` is, field for field, the unit's state right after the
  change that took seq n committed (the writer records that state after every change it commits;
  it is the only writer), so it reflects every change up to n and none after;
- joining: the list plus the resumed updates with seq > n equals a fresh list.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from backend.accounts.models import Role
from backend.common.errors import DomainError
from backend.events.snapshot import EPOCH_HEADER, SEQ_HEADER
from backend.records import services
from backend.records.models import Crate, DestructionRequest, TransferRequest, WithdrawalRequest
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, unit_staff
from tests.support.signing import sign
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LISTS = {
    "crate": "/api/crates/", "withdrawal": "/api/withdrawal-requests/", "destruction": "/api/destruction-requests/",
    "transfer": "/api/transfer-requests/", "sendback": "/api/sendback-records/",
}
MODELS = {"withdrawal": WithdrawalRequest, "destruction": DestructionRequest, "transfer": TransferRequest}
KINDS = list(MODELS)

operations = st.one_of(
    st.tuples(st.just("crate_create")),
    st.tuples(st.just("relocate"), st.integers(0, 20)),
    st.tuples(st.just("crate_delete"), st.integers(0, 20)),
    st.tuples(st.just("request"), st.sampled_from(KINDS), st.integers(0, 20)),
    st.tuples(st.just("decide"), st.sampled_from(KINDS), st.sampled_from(["approve", "reject", "send_back", "resubmit"]),
              st.integers(0, 20)),
    st.tuples(st.just("request_delete"), st.sampled_from(KINDS), st.integers(0, 20)),
)


class World:
    def __init__(self) -> None:
        self.home, self.away = UnitFactory(code="snap-home"), UnitFactory(code="snap-away")
        self.staff, self.away_staff = unit_staff(self.home), unit_staff(self.away)
        for _ in range(4):
            CrateFactory(unit=self.home)
        # Readers: one of each unit (the away unit sees incoming transfers and the crates they bring).
        self.readers = [self.staff[Role.APPROVER], self.away_staff[Role.APPROVER]]

    def apply(self, op: tuple) -> None:
        """One change through its service; a refused one (wrong state, crate busy) commits nothing."""
        staff = self.staff
        crates = list(Crate.objects.filter(unit=self.home, deleted_at__isnull=True).order_by("crate_number"))
        try:
            if op[0] == "crate_create":
                services.crate_create(actor=staff[Role.STORE], location="Dock")
            elif op[0] in ("relocate", "crate_delete") and crates:
                crate = crates[op[1] % len(crates)]
                if op[0] == "relocate":
                    services.crate_relocate(actor=staff[Role.STORE], crate_id=crate.id, location=f"Bay {random.random():.4f}")
                else:
                    services.crate_delete(actor=staff[Role.STORE], crate_id=crate.id, expected_version=None, reason="gone")
            elif op[0] == "request" and crates:
                extra = {"destination_unit_id": self.away.id} if op[1] == "transfer" else {}
                services.request_create(entity=op[1], actor=staff[Role.REQUESTER], crate_ids=[crates[op[2] % len(crates)].id],
                                        reason="generated", **extra)
            elif op[0] in ("decide", "request_delete"):
                kind = op[1]
                requests = list(MODELS[kind].objects.filter(unit=self.home, deleted_at__isnull=True).order_by("request_number"))
                if not requests:
                    return
                request = requests[op[-1] % len(requests)]
                if op[0] == "request_delete":
                    services.request_delete(entity=kind, actor=staff[Role.REQUESTER], request_id=request.id,
                                            expected_version=None, reason="withdrawn")
                elif op[2] == "resubmit":
                    services.request_transition(entity=kind, action="resubmit", actor=staff[Role.REQUESTER],
                                                request_id=request.id)
                else:
                    approver = staff[Role.APPROVER]
                    services.request_transition(entity=kind, action=op[2], actor=approver, request_id=request.id,
                                                reason="generated", signature_id=sign(approver, kind, op[2]))
        except DomainError:
            pass


def lists_of(client: APIClient) -> tuple[dict[str, dict[str, dict]], dict[str, int], str]:
    """Every list of the client's unit: {entity: {id: row}}, {entity: its X-Records-Seq}, the epoch."""
    rows, seqs, epochs = {}, {}, set()
    for entity, path in LISTS.items():
        response = client.get(path, {"page_size": 500})
        assert response.status_code == 200 and response.json()["next"] is None
        rows[entity] = {row["id"]: row for row in response.json()["results"]}
        seqs[entity] = int(response[SEQ_HEADER])
        epochs.add(response[EPOCH_HEADER])
    assert len(epochs) == 1
    return rows, seqs, epochs.pop()


def lists_with_seq(client: APIClient) -> tuple[dict, int]:
    """The lists and the one seq they all reflect (read while nothing else writes)."""
    rows, seqs, _ = lists_of(client)
    assert len(set(seqs.values())) == 1, seqs
    return rows, next(iter(seqs.values()))


def apply_update(state: dict[str, dict[str, str | None]], update: dict) -> None:
    """What a client does with a data_update: the record's id and status, or its removal."""
    ids = state[update["entity"]]
    if update["action"] == "deleted":
        ids.pop(update["data"]["id"], None)
    else:
        ids[update["data"]["id"]] = update["data"]["status"] if update["entity"] != "sendback" else None


def view(rows: dict[str, dict[str, dict]]) -> dict[str, dict[str, str | None]]:
    return {entity: {i: (row.get("status") if entity != "sendback" else None) for i, row in ids.items()}
            for entity, ids in rows.items()}


async def resume(port: int, user, last_seq: int, epoch: str) -> tuple[dict, list[dict]]:
    """Connect with last_seq (and the lists' epoch); every data_update up to the greeting's seq."""
    ws = await connect(port, token=access_token(user), last_seq=last_seq, epoch=epoch)
    try:
        hello = await recv_json(ws, 10)
        assert hello["type"] == "connection_established", hello
        updates: list[dict] = []
        while (updates[-1]["seq"] if updates else last_seq) < hello["seq"]:
            message = await recv_json(ws, 10)
            if message["type"] in ("notification", "job_update"):  # the user's, owed on resume
                continue
            assert message["type"] == "data_update", message  # never a resync: the list's seq is resumable
            updates.append(message)
        return hello, updates
    finally:
        await ws.close()


@pytest.fixture
def world(transactional_db):
    return World()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(operations, min_size=1, max_size=8), delay=st.floats(0, 0.15))
def test_a_list_joins_the_stream_without_a_gap_or_a_duplicate(daphne, world, ops, delay):
    clients = [APIClient() for _ in world.readers]
    for client, reader in zip(clients, world.readers, strict=True):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(reader)}")

    # given the state of each reader's unit after every change (the writer is the only writer)
    states: list[dict[int, dict]] = [{} for _ in clients]
    errors: list[BaseException] = []

    def record() -> None:
        for index, client in enumerate(clients):
            rows, seq = lists_with_seq(client)
            states[index][seq] = rows

    def writer() -> None:
        try:
            for op in ops:
                world.apply(op)
                record()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    record()
    # when the changes commit while the readers read their lists, again and again
    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(delay)
    reads: list[list] = [[] for _ in clients]
    while True:
        running = thread.is_alive()
        for index, client in enumerate(clients):
            reads[index].append(lists_of(client))
        if not running:
            break
    thread.join()
    assert not errors, errors

    for index, (client, reader) in enumerate(zip(clients, world.readers, strict=True)):
        # then every list read is exactly its unit's state at its own seq: every change up to it, none after
        for rows, seqs, _ in reads[index]:
            for entity, seq in seqs.items():
                assert seq in states[index], f"{entity}: seq {seq} is no committed state's ({sorted(states[index])})"
                assert rows[entity] == states[index][seq][entity], f"{entity} list differs from the state at seq {seq}"
        rows, seqs, epoch = reads[index][0]  # the first read, taken while the changes were committing
        # and the lists plus the updates resumed (over a real WebSocket, from the smallest of their
        # seqs) equal a fresh read, each update applied only to the lists it came after
        fresh, fresh_seq = lists_with_seq(client)
        start = min(seqs.values())
        hello, updates = asyncio.run(resume(daphne, reader, start, epoch))
        assert (hello["seq"], hello["epoch"]) == (fresh_seq, epoch)
        assert [u["seq"] for u in updates] == list(range(start + 1, fresh_seq + 1))
        state = view(rows)
        for update in updates:
            if update["seq"] > seqs[update["entity"]]:
                apply_update(state, update)
        assert state == view(fresh)
