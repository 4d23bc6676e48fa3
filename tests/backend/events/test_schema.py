"""Every frame any action writes is valid against the one schema of its message type (schema.py), and
carries identifiers and status only."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.events import schema
from backend.events.models import OutboxEvent
from backend.records import services
from backend.records.lifecycle import REQUEST_KINDS
from tests.support.db import make_superuser
from tests.support.factories import CrateFactory, UnitFactory, unit_staff
from tests.support.signing import sign, sign_act, transition_now

pytestmark = pytest.mark.django_db

# What a data_update's `data` may hold: ids, numbers, status. Nothing a user typed.
ALLOWED_DATA_KEYS = {"id", "status", "request_number", "crate_number", "request_id", "request_entity", "actor"}
SECRET = "CONFIDENTIAL-dossier-4711"


def _file(entity: str, requester, **extra):
    crate = CrateFactory(unit=requester.unit)
    return services.request_create(entity=entity, actor=requester, crate_ids=[crate.id], reason=SECRET, **extra)


def _every_action() -> None:
    """Run every service that writes events at least once, with free text full of SECRET."""
    unit, destination, third = UnitFactory(), UnitFactory(), UnitFactory()
    staff = unit_staff(unit)
    root = make_superuser()

    crate = services.crate_create(actor=staff["store"], location=SECRET)
    services.crates_create_bulk(actor=staff["store"], unit=unit, count=2, location_prefix=SECRET)
    services.crate_update(actor=staff["store"], crate_id=crate.id, expected_version=1, location=f"{SECRET} 2")
    services.crate_relocate(actor=staff["store"], crate_id=crate.id, location=f"{SECRET} 3")
    services.crate_delete(
        reason="deleted in a test", actor=staff["store"],
        crate_id=services.crate_create(actor=root, unit=unit).id, expected_version=1,
    )

    for entity in REQUEST_KINDS:
        extra = {"destination_unit_id": destination.id} if entity == "transfer" else {}
        edited = _file(entity, staff["requester"], **extra)
        update = {"destination_unit_id": third.id} if entity == "transfer" else {}
        services.request_update(change_reason="edited in a test",
            entity=entity, actor=staff["requester"], request_id=edited.id, expected_version=1, reason=SECRET,
            crate_ids=[CrateFactory(unit=unit).id], **update,
        )
        services.request_delete(
            reason="deleted in a test", entity=entity, actor=staff["requester"], request_id=edited.id, expected_version=2,
        )
        for path in (["approve"], ["reject"], ["send_back", "resubmit"]):
            request = _file(entity, staff["requester"], **extra)
            for action in path:
                actor = staff["requester"] if action == "resubmit" else staff["approver"]
                transition_now(entity=entity, action=action, actor=actor, request_id=request.id, reason=SECRET,
                    signature_id=sign(actor, entity, action))

    # legal holds (placed, released) and an audit-trail review (created)
    from django.utils import timezone

    from backend.records.services.holds import hold_place, hold_release
    from backend.records.services.reviews import review_sign_off

    qa = staff["qa"]
    hold = hold_place(actor=qa, crate_ids=[CrateFactory(unit=unit).id], reason=SECRET, signature=sign_act(qa, "hold"))
    hold_release(actor=qa, hold_id=hold.id, reason=SECRET, signature=sign_act(qa, "release"))
    review_sign_off(actor=qa, through=timezone.now(), comment=SECRET, signature=sign_act(qa, "review"))


def test_every_frame_every_action_writes_is_a_valid_data_update():
    # given every action run once
    _every_action()
    rows = list(OutboxEvent.objects.order_by("unit_id", "seq"))
    validator = jsonschema.Draft202012Validator(schema.SCHEMAS["data_update"])
    seen = set()

    for row in rows:
        message = json.loads(row.frame)
        # then every frame is valid against the data_update schema,
        errors = [e.message for e in validator.iter_errors(message)]
        assert errors == [], (row.frame, errors)
        # agrees with its row,
        assert (message["seq"], message["entity"], message["action"], message["data"]["id"]) == (
            row.seq, row.entity, row.action, str(row.object_id),
        )
        # carries identifiers and status only, and never the free text of the change
        assert set(message["data"]) <= ALLOWED_DATA_KEYS
        assert all(isinstance(v, str) and len(v) <= 40 for v in message["data"].values())
        assert SECRET not in row.frame
        # and is encoded once, compactly, as schema.encode does
        assert row.frame == schema.encode(message)
        seen.add((row.entity, row.action))

    # and the run covered every entity and every action
    assert {e for e, _ in seen} == set(schema.ENTITIES)
    assert {a for _, a in seen} == set(schema.ACTIONS)


def test_the_schema_rejects_what_it_must():
    # a frame carrying document contents, a bad timestamp or seq 0 is invalid: the check above can fail
    validator = jsonschema.Draft202012Validator(schema.SCHEMAS["data_update"])
    good = schema.data_update(
        entity="crate", action="updated", data={"id": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "status": "withdrawn"},
        timestamp=datetime(2026, 1, 15, 10, 30, tzinfo=UTC), seq=1,
    )
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "data": {**good["data"], "reason": "text"}})
    assert not validator.is_valid({**good, "timestamp": "2026-01-15 10:30"})
    assert not validator.is_valid({**good, "seq": 0})
    assert not validator.is_valid({**good, "entity": "document"})


def test_every_other_message_builder_matches_its_schema():
    now = datetime(2026, 1, 15, 10, 30, 0, 123456, tzinfo=UTC)
    unit_id = "6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69"
    update = schema.data_update(entity="withdrawal", action="created", data={"id": unit_id}, timestamp=now, seq=3)
    messages = {
        "connection_established": schema.connection_established(unit_id=unit_id, seq=0, unread_notifications=2,
                                                                expires_at=now.timestamp()),
        "refreshed": schema.refreshed(expires_at=now.timestamp()),
        "notification": schema.notification(notification={
            "id": unit_id, "kind": "request_decided", "title": "WR-2026-0001 approved", "body": "…",
            "link": {"entity": "withdrawal", "id": unit_id}, "created_at": "2026-01-15T10:30:00.123Z", "read": False,
        }),
        "pong": schema.pong(timestamp=now),
        "resync_required": schema.resync_required(reason="gap too old", seq=900),
        "error": schema.error(code="unknown_type", message="Unknown message type."),
        "job_update": schema.job_update(
            job={
                "id": unit_id, "kind": "withdrawal.approve", "status": "running",
                "progress": {"total": 1, "done": 0, "failed": 0},
            }
        ),
        "data_update_batch": json.loads(schema.data_update_batch_frame([schema.encode(update), schema.encode(update)])),
        "activity": schema.activity(seq=3, entry={
            "id": unit_id, "unit": unit_id, "position": 7, "at": "2026-01-15T10:30:00.123456Z",
            "actor": {"id": unit_id, "username": "north.approver", "full_name": "Ada Approver", "role": "approver"},
            "entity": "withdrawal", "record_id": unit_id, "record_number": "WR-2026-0001", "action": "approved",
            "version": 2, "changes": {"status": ["pending", "approved"]}, "reason": "",
            "signature": {"id": unit_id, "meaning": "approved", "signed_at": "2026-01-15T10:30:00.100000Z",
                          "signer": "north.approver", "full_name": "Ada Approver"},
            "job_id": None, "seq": 3,
        }),
    }
    someone = {"id": unit_id, "username": "north.approver", "full_name": "Ada Approver", "role": "approver",
               "viewing": {"entity": "withdrawal", "id": unit_id}, "editing": None, "since": "2026-01-15T10:30:00.123Z"}
    messages["presence"] = schema.presence(users=[someone])
    messages["presence_update"] = schema.presence_update(user=someone, state="viewing")
    messages["notification_read"] = schema.notification_read(ids=[unit_id])
    assert set(messages) | {"data_update"} == set(schema.SCHEMAS)
    for kind, message in messages.items():
        assert message["type"] == kind
        jsonschema.validate(message, schema.SCHEMAS[kind], cls=jsonschema.Draft202012Validator)
    assert messages["pong"]["timestamp"] == "2026-01-15T10:30:00.123Z"
    assert messages["connection_established"]["message"] == f"Connected to unit {unit_id} updates"
    # the token's expiry, as every other time: ISO 8601 UTC, milliseconds
    assert messages["connection_established"]["expires_at"] == messages["refreshed"]["expires_at"] == (
        "2026-01-15T10:30:00.123Z"
    )


def test_the_client_messages_with_a_schema_accept_what_the_server_takes():
    refresh = jsonschema.Draft202012Validator(schema.CLIENT_SCHEMAS["refresh"])
    assert refresh.is_valid({"type": "refresh", "token": "eyJ.a.b"})
    assert not refresh.is_valid({"type": "refresh"})
    assert not refresh.is_valid({"type": "refresh", "token": 42})
    assert not refresh.is_valid({"type": "refresh", "token": "x" * (schema.REFRESH_TOKEN_MAX_LENGTH + 1)})


def test_the_stream_epoch_and_read_state_messages_match_their_schemas():
    unit_id = "6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69"
    hello = schema.connection_established(
        unit_id=unit_id, seq=4, unread_notifications=0, expires_at=1_768_473_000.0, epoch="0f3a9c2e5b7d1a4c"
    )
    resync = schema.resync_required(reason="epoch_changed", seq=0, epoch="0f3a9c2e5b7d1a4c")
    read_all = schema.notification_read(all_read=True)
    for message in (hello, resync, read_all):
        jsonschema.validate(message, schema.SCHEMAS[message["type"]], cls=jsonschema.Draft202012Validator)
    assert (hello["epoch"], resync["epoch"]) == ("0f3a9c2e5b7d1a4c", "0f3a9c2e5b7d1a4c")
    assert read_all == {"type": "notification_read", "ids": [], "all": True}
    assert "epoch" not in schema.resync_required(reason="gap", seq=3)  # only when it changed
    assert set(schema.RESYNC_REASONS) >= {"epoch_changed", "last_seq_ahead", "history_limit", "history_unavailable"}
    bad = {"type": "notification_read", "ids": ["not-a-uuid"], "all": False}
    assert not jsonschema.Draft202012Validator(schema.SCHEMAS["notification_read"]).is_valid(bad)


# --- client -> server: the schemas the typed client kit is generated from say what the consumer takes ---

_ID = "6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69"
_IDS = st.sampled_from([_ID, _ID.upper(), "not-a-uuid", "", 7, None])
_ENTITY_VALUES = st.sampled_from([*schema.ENTITIES, "unit", "", 3])
_SUBSCRIBE = st.fixed_dictionaries(
    {"type": st.just("subscribe")},
    optional={
        "entities": st.one_of(st.lists(_ENTITY_VALUES, max_size=12), st.just("withdrawal"), st.none()),
        "ids": st.one_of(st.lists(_IDS, max_size=3), st.lists(st.just(_ID), min_size=99, max_size=102), st.just(_ID)),
        "mine": st.sampled_from([True, False, 1, "yes", None]),
        "unit": st.just(_ID),
    },
)


@given(message=_SUBSCRIBE)
@settings(max_examples=300, deadline=None)
def test_the_subscribe_schema_accepts_exactly_what_the_consumer_takes(message):
    from realtime.subscriptions import parse_message

    valid = jsonschema.Draft202012Validator(schema.CLIENT_SCHEMAS["subscribe"]).is_valid(message)
    assert valid == (not isinstance(parse_message(message), str)), message


@given(kind=st.sampled_from(["viewing", "editing"]), entity=_ENTITY_VALUES, record=_IDS)
@settings(max_examples=100, deadline=None)
def test_the_presence_schemas_accept_exactly_what_the_consumer_takes(kind, entity, record):
    from realtime.presence import parse_target

    message = {"type": kind, "entity": entity, "id": record}
    valid = jsonschema.Draft202012Validator(schema.CLIENT_SCHEMAS[kind]).is_valid(message)
    assert valid == (not isinstance(parse_target(message), str)), message
