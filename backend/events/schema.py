"""Every message that reaches a WebSocket client is built here, and only here.

The JSON Schemas below are the single definition of each server→client message type
(docs/realtime.md lists them); tests validate every action's events against them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

# The WebSocket protocol's version (docs/realtime.md): a change a client already in use would break
# raises it. The typed client kit's major version follows it (docs/client.md, "Versions").
PROTOCOL_VERSION = 1

ENTITIES = ("withdrawal", "destruction", "transfer", "sendback", "crate", "legal_hold", "audit_review")
ACTIONS = ("created", "updated", "deleted")
# Every `code` an `error` message can carry (docs/realtime.md explains each).
CLIENT_ERROR_CODES = (
    "malformed_json",
    "invalid_message",
    "unknown_type",
    "binary_not_supported",
    "message_too_large",
    "rate_limited",
    "internal_error",
    "refresh_unavailable",
)


def utc_timestamp(moment: datetime) -> str:
    """`2026-01-15T10:30:00.000Z`, the seed's format (UTC, milliseconds, `Z`)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def encode(message: dict[str, Any]) -> str:
    """The one JSON encoding used for frames: compact, stable key order."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def data_update(*, entity: str, action: str, data: dict[str, Any], timestamp: datetime, seq: int) -> dict:
    return {
        "type": "data_update",
        "entity": entity,
        "action": action,
        "data": data,
        "timestamp": utc_timestamp(timestamp),
        "seq": seq,
    }


def connection_established(
    *, unit_id: str, seq: int, unread_notifications: int = 0, expires_at: float, epoch: str = ""
) -> dict:
    return {
        "type": "connection_established",
        "message": f"Connected to unit {unit_id} updates",
        "unit_id": unit_id,
        "seq": seq,
        # The user's unread notifications now (backend.notifications): a reconnecting client's count.
        "unread_notifications": unread_notifications,
        # When the connection's access token expires (unix time in, ISO 8601 UTC out): the client
        # sends `refresh` before then, or the socket closes 4002.
        "expires_at": expiry_timestamp(expires_at),
        # Which numbering `seq` belongs to: a client resumes with `&epoch=` (backend/events/epochs.py).
        "epoch": epoch,
    }


def refreshed(*, expires_at: float) -> dict:
    """The answer to a client's `refresh`: the connection now lives until the new token's expiry."""
    return {"type": "refreshed", "expires_at": expiry_timestamp(expires_at)}


def expiry_timestamp(unix_time: float) -> str:
    return utc_timestamp(datetime.fromtimestamp(unix_time, UTC))


def pong(*, timestamp: datetime) -> dict:
    return {"type": "pong", "timestamp": utc_timestamp(timestamp)}


def resync_required(*, reason: str, seq: int, epoch: str | None = None) -> dict:
    message = {"type": "resync_required", "reason": reason, "seq": seq}
    if epoch is not None:  # the stream's epoch, when it changed under a live connection (`epoch_changed`)
        message["epoch"] = epoch
    return message


def error(*, code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


def job_update(*, job: dict[str, Any]) -> dict:
    return {"type": "job_update", "job": job}


def activity(*, entry: dict[str, Any], seq: int) -> dict:
    """What a person did, for clients that asked for the activity feed (`activity=1`): the audit
    entry of a change (without its client address and hashes), with the seq of the update it
    describes (an activity frame takes no seq of its own)."""
    return {"type": "activity", "entry": entry, "seq": seq}


def notification(*, notification: dict[str, Any], counted: bool = False) -> dict:
    """A notification for the user it was written for (backend.notifications), after its COMMIT:
    `{id, kind, title, body, link: {entity, id}, created_at, read}`. `counted`: sent on a resume for
    one the greeting's `unread_notifications` already counts (the client must not count it again)."""
    message = {"type": "notification", "notification": notification}
    if counted:
        message["counted"] = True
    return message


def presence(*, users: list[dict[str, Any]]) -> dict:
    """Who else is on the unit's screens (sent to a `presence=1` connection when it joins)."""
    return {"type": "presence", "users": users}


def presence_update(*, user: dict[str, Any], state: str) -> dict:
    """One user joined, left, or now views / edits a record or is idle."""
    return {"type": "presence_update", "user": user, "state": state}


def notification_read(*, ids: list[str] | None = None, all_read: bool = False) -> dict:
    """The user read notifications in another tab or device: these `ids`, or `all` of them."""
    return {"type": "notification_read", "ids": [] if all_read else list(ids or ()), "all": all_read}


def data_update_batch_frame(frames: list[str]) -> str:
    """A `data_update_batch` built from already-encoded `data_update` frames, without re-encoding."""
    return '{"type":"data_update_batch","updates":[' + ",".join(frames) + "]}"


# Why a client must refetch instead of resuming (docs/realtime.md, "Resuming").
RESYNC_REASONS = (
    "invalid_last_seq", "last_seq_ahead", "history_limit", "history_unavailable", "gap", "epoch_changed",
)
# What a notification is about (backend.notifications; docs/realtime.md, "Notifications").
NOTIFICATION_KINDS = (
    "request_decided", "transfer_incoming", "job_finished", "job_failed", "destruction_due", "signature_locked",
    "audit_chain_broken", "audit_review_due",
)
# What a notification links to: a request or crate (the console opens its history), a job, a user,
# a unit (its audit trail).
NOTIFICATION_LINK_ENTITIES = ("withdrawal", "destruction", "transfer", "crate", "job", "user", "unit")

_TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"}
_UUID = {"type": "string", "pattern": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
_SEQ = {"type": "integer", "minimum": 1}

DATA_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "entity", "action", "data", "timestamp", "seq"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "data_update"},
        "entity": {"enum": list(ENTITIES)},
        "action": {"enum": list(ACTIONS)},
        "timestamp": _TIMESTAMP,
        "seq": _SEQ,
        # Identifiers and status only: never document contents.
        "data": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {
                "id": _UUID,
                "status": {"type": "string"},
                "request_number": {"type": "string"},
                "crate_number": {"type": "string"},
                "request_id": _UUID,
                "request_entity": {"enum": ["withdrawal", "destruction", "transfer"]},
                # The username of the person who made the change (absent for system changes).
                "actor": {"type": "string"},
            },
        },
    },
}

_NULLABLE_UUID = {"oneOf": [_UUID, {"type": "null"}]}

ACTIVITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "entry", "seq"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "activity"},
        "seq": _SEQ,
        "entry": {
            "type": "object",
            "required": ["id", "unit", "at", "actor", "entity", "record_id", "record_number", "action", "version",
                         "changes", "reason", "signature", "job_id"],
            "additionalProperties": False,
            "properties": {
                "id": _UUID, "unit": _UUID, "position": {"type": "integer"}, "at": {"type": "string"},
                "actor": {
                    "type": "object", "required": ["id", "username", "full_name", "role"],
                    "additionalProperties": False,
                    "properties": {"id": _NULLABLE_UUID, "username": {"type": "string"},
                                   "full_name": {"type": "string"}, "role": {"type": "string"}},
                },
                "entity": {"type": "string"}, "record_id": _UUID, "record_number": {"type": "string"},
                "action": {"type": "string"}, "version": {"type": ["integer", "null"]},
                "changes": {"type": "object"}, "reason": {"type": "string"},
                "signature": {"oneOf": [{"type": "null"}, {
                    "type": "object", "required": ["id", "meaning", "signed_at", "signer", "full_name"],
                    "additionalProperties": False,
                    "properties": {"id": _UUID, "meaning": {"type": "string"}, "signed_at": {"type": "string"},
                                   "signer": {"type": "string"}, "full_name": {"type": "string"}},
                }]},
                "job_id": _NULLABLE_UUID, "seq": {"type": ["integer", "null"]}, "reviewed": {"type": "boolean"},
            },
        },
    },
}

NOTIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "notification"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "notification"},
        "counted": {"const": True},
        "notification": {
            "type": "object",
            "required": ["id", "kind", "title", "body", "link", "created_at", "read"],
            "additionalProperties": False,
            "properties": {
                "id": _UUID,
                "kind": {"enum": list(NOTIFICATION_KINDS)},
                "title": {"type": "string"},
                "body": {"type": "string"},
                "link": {
                    "type": "object", "required": ["entity", "id"], "additionalProperties": False,
                    "properties": {"entity": {"enum": list(NOTIFICATION_LINK_ENTITIES)}, "id": _UUID},
                },
                "created_at": _TIMESTAMP,
                "read": {"type": "boolean"},
            },
        },
    },
}

PRESENCE_STATES = ("joined", "left", "viewing", "editing", "idle")
_PRESENCE_TARGET = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object", "required": ["entity", "id"], "additionalProperties": False,
            "properties": {"entity": {"enum": list(ENTITIES)}, "id": {"type": "string"}},
        },
    ]
}
_PRESENCE_USER = {
    "type": "object",
    "required": ["id", "username", "full_name", "role", "viewing", "editing", "since"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"}, "username": {"type": "string"}, "full_name": {"type": "string"},
        "role": {"type": "string"}, "viewing": _PRESENCE_TARGET, "editing": _PRESENCE_TARGET,
        "since": _TIMESTAMP,
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "data_update": DATA_UPDATE_SCHEMA,
    "notification": NOTIFICATION_SCHEMA,
    "activity": ACTIVITY_SCHEMA,
    "data_update_batch": {
        "type": "object",
        "required": ["type", "updates"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "data_update_batch"},
            "updates": {"type": "array", "minItems": 1, "items": DATA_UPDATE_SCHEMA},
        },
    },
    "connection_established": {
        "type": "object",
        "required": ["type", "message", "unit_id", "seq", "unread_notifications", "expires_at"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "connection_established"},
            "message": {"type": "string", "pattern": "^Connected to unit .+ updates$"},
            "unit_id": _UUID,
            "seq": {"type": "integer", "minimum": 0},
            "unread_notifications": {"type": "integer", "minimum": 0},
            "expires_at": _TIMESTAMP,
            "epoch": {"type": "string", "maxLength": 32},
        },
    },
    "refreshed": {
        "type": "object",
        "required": ["type", "expires_at"],
        "additionalProperties": False,
        "properties": {"type": {"const": "refreshed"}, "expires_at": _TIMESTAMP},
    },
    "pong": {
        "type": "object",
        "required": ["type", "timestamp"],
        "additionalProperties": False,
        "properties": {"type": {"const": "pong"}, "timestamp": _TIMESTAMP},
    },
    "resync_required": {
        "type": "object",
        "required": ["type", "reason", "seq"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "resync_required"},
            "reason": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0},
            "epoch": {"type": "string", "maxLength": 32},
        },
    },
    "error": {
        "type": "object",
        "required": ["type", "code", "message"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "error"},
            "code": {"enum": list(CLIENT_ERROR_CODES)},
            "message": {"type": "string"},
        },
    },
    "job_update": {
        "type": "object",
        "required": ["type", "job"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "job_update"},
            "job": {
                "type": "object",
                "required": ["id", "status", "progress"],
                "properties": {
                    "id": _UUID,
                    "kind": {"type": "string"},
                    "status": {"enum": ["queued", "running", "succeeded", "failed"]},
                    "progress": {
                        "type": "object",
                        "required": ["total", "done", "failed"],
                        "properties": {
                            "total": {"type": "integer"},
                            "done": {"type": "integer"},
                            "failed": {"type": "integer"},
                        },
                    },
                    "error": {},
                },
            },
        },
    },
    "presence": {
        "type": "object", "required": ["type", "users"], "additionalProperties": False,
        "properties": {"type": {"const": "presence"}, "users": {"type": "array", "items": _PRESENCE_USER}},
    },
    "notification_read": {
        "type": "object", "required": ["type", "ids", "all"], "additionalProperties": False,
        "properties": {
            "type": {"const": "notification_read"}, "ids": {"type": "array", "items": _UUID}, "all": {"type": "boolean"},
        },
    },
    "presence_update": {
        "type": "object", "required": ["type", "user", "state"], "additionalProperties": False,
        "properties": {
            "type": {"const": "presence_update"}, "user": _PRESENCE_USER, "state": {"enum": list(PRESENCE_STATES)},
        },
    },
}

# Client -> server messages (docs/realtime.md). The consumer checks them by hand, field by field,
# with the same limits (tests/backend/events/test_schema.py holds the two together); the typed client
# kit's message types are generated from these and SCHEMAS (manage.py export_message_schemas).
REFRESH_TOKEN_MAX_LENGTH = 4000  # under the consumer's 4,096-byte message limit
# Record ids as the consumer takes them: any case (it lowercases them).
_ANY_CASE_UUID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}
_CLIENT_TARGET = {"entity": {"enum": list(ENTITIES)}, "id": _ANY_CASE_UUID}
# The subscription filter's limits (realtime/subscriptions.py: MAX_IDS, and twice the entities).
SUBSCRIBE_MAX_IDS = 100
CLIENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "ping": {
        "type": "object", "required": ["type"],
        "properties": {"type": {"const": "ping"}, "timestamp": {"type": "string"}},
    },
    "subscribe": {
        "type": "object", "required": ["type"], "additionalProperties": False,
        "properties": {
            "type": {"const": "subscribe"},
            "entities": {"type": "array", "minItems": 1, "maxItems": 2 * len(ENTITIES), "items": {"enum": list(ENTITIES)}},
            "ids": {"type": "array", "minItems": 1, "maxItems": SUBSCRIBE_MAX_IDS, "items": _ANY_CASE_UUID},
            "mine": {"type": "boolean"},
        },
    },
    "unsubscribe": {"type": "object", "required": ["type"], "properties": {"type": {"const": "unsubscribe"}}},
    "viewing": {
        "type": "object", "required": ["type", "entity", "id"],
        "properties": {"type": {"const": "viewing"}, **_CLIENT_TARGET},
    },
    "editing": {
        "type": "object", "required": ["type", "entity", "id"],
        "properties": {"type": {"const": "editing"}, **_CLIENT_TARGET},
    },
    "idle": {"type": "object", "required": ["type"], "properties": {"type": {"const": "idle"}}},
    "refresh": {
        "type": "object",
        "required": ["type", "token"],
        "properties": {
            "type": {"const": "refresh"},
            "token": {"type": "string", "maxLength": REFRESH_TOKEN_MAX_LENGTH},
        },
    },
}
