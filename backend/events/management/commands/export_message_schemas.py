"""`manage.py export_message_schemas [--output FILE]`: every WebSocket message's JSON Schema, as one
document (docs/client.md).

The typed client kit (clients/js) generates its message types from this document: the server's own
definitions (backend/events/schema.py), never typed twice by hand. The document is deterministic
(sorted keys), so a check can compare what the kit committed with what the server says now.

Layout: a JSON Schema 2020-12 document whose `$defs` hold each message (PascalCase of its `type`),
`ServerMessage` (one of every server -> client message), `ClientMessage` (one of every client -> server
message), the enums and the sub-schemas several messages share (`PresenceUser`, ...); its root,
`Protocol`, only names the two directions.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from backend.events import schema

# Sub-schemas that appear in more than one message, by identity: one named type each.
SHARED = (
    (schema.SCHEMAS["data_update"], "DataUpdate"),
    (schema.SCHEMAS["presence"]["properties"]["users"]["items"], "PresenceUser"),
    (schema.SCHEMAS["data_update"]["properties"]["data"], "DataUpdatePayload"),
    (schema.SCHEMAS["notification"]["properties"]["notification"], "Notification"),
    (schema.SCHEMAS["activity"]["properties"]["entry"], "ActivityEntry"),
    (schema.SCHEMAS["job_update"]["properties"]["job"], "JobState"),
)
# `Error` would shadow the language's own in TypeScript.
SERVER_NAMES = {"error": "ServerError", "notification": "NotificationMessage"}


def type_name(message_type: str, suffix: str = "") -> str:
    return "".join(part.capitalize() for part in message_type.split("_")) + suffix


def message_schemas() -> dict[str, Any]:
    shared = {id(sub): name for sub, name in SHARED}
    enums = {
        "Entity": schema.ENTITIES, "Action": schema.ACTIONS, "ClientErrorCode": schema.CLIENT_ERROR_CODES,
        "ResyncReason": schema.RESYNC_REASONS, "NotificationKind": schema.NOTIFICATION_KINDS,
        "PresenceState": schema.PRESENCE_STATES,
    }
    # An enum of exactly one of these lists is that named type wherever it appears.
    enum_names = {tuple(values): name for name, values in enums.items()}
    definitions: dict[str, Any] = {name: {"title": name, "enum": list(values)} for name, values in enums.items()}

    def define(name: str, node: dict) -> None:
        if name in definitions:
            raise ValueError(f"two message schemas would both be named {name}")
        definitions[name] = node

    def convert(node: Any, *, top: str | None = None) -> Any:
        if isinstance(node, dict):
            name = shared.get(id(node))
            if name is not None and name != top:
                if name not in definitions:
                    define(name, {"title": name, **convert(node, top=name)})
                return {"$ref": f"#/$defs/{name}"}
            if set(node) == {"enum"} and tuple(node["enum"]) in enum_names:
                return {"$ref": f"#/$defs/{enum_names[tuple(node['enum'])]}"}
            out = {key: convert(value) for key, value in node.items()}
            # `const` needs no `type` for a validator; the generator names the literal better with it.
            if "const" in node and isinstance(node["const"], str) and "type" not in node:
                out["type"] = "string"
            return out
        if isinstance(node, list):
            return [convert(item) for item in node]
        return copy.deepcopy(node)

    server = []
    for message_type, message_schema in schema.SCHEMAS.items():
        name = shared.get(id(message_schema)) or SERVER_NAMES.get(message_type) or type_name(message_type)
        if name not in definitions:
            define(name, {"title": name, **convert(message_schema, top=name)})
        server.append({"$ref": f"#/$defs/{name}"})
    client = []
    for message_type, message_schema in schema.CLIENT_SCHEMAS.items():
        name = type_name(message_type, "Message")
        define(name, {"title": name, **convert(message_schema, top=name)})
        client.append({"$ref": f"#/$defs/{name}"})
    define("ClientMessage", {"title": "ClientMessage", "oneOf": client})
    define("ServerMessage", {
        "title": "ServerMessage",
        "description": "Every server -> client message on /ws/updates/ (backend/events/schema.py).",
        "oneOf": server,
    })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Protocol",
        "description": "The messages of /ws/updates/, each way (docs/realtime.md).",
        "type": "object",
        "additionalProperties": False,
        "properties": {"server": {"$ref": "#/$defs/ServerMessage"}, "client": {"$ref": "#/$defs/ClientMessage"}},
        "x-protocol-version": schema.PROTOCOL_VERSION,
        "$defs": dict(sorted(definitions.items())),
    }


class Command(BaseCommand):
    help = "Write every WebSocket message's JSON Schema as one document (for the typed client kit)."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", default="-", help="a file to write (default: standard output)")

    def handle(self, *args, output="-", **options):
        text = json.dumps(message_schemas(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if output == "-":
            sys.stdout.write(text)
        else:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
