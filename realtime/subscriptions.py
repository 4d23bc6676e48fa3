"""Selective updates: a connection's filter over its unit's `data_update` stream (docs/realtime.md,
"Selective updates").

An update matches a filter when

    (no `entities`, or its `entity` is one of them)
    AND (neither `ids` nor `mine` given,
         OR its `data.id` or `data.request_id` is one of `ids`,
         OR `mine` and the update is the user's: its `data.actor` is the user, or its `data.id` /
            `data.request_id` is one of the user's requests).

The user's requests are resolved when the filter is set (requests of the unit they created or last
decided or sent back) and grow with every request update whose actor is the user. A filter only
ever narrows the unit's own stream: an id of another unit matches nothing, because nothing of
another unit reaches the connection.

Matching reads each frame's metadata (entity, data.id, data.request_id, data.actor) once per
process, the first time a filtered connection needs it, and keeps it on the `Outgoing` every
connection of the unit shares: no per-connection decoding or encoding.
"""

from __future__ import annotations

import json
import re

from backend.events import schema

from .frames import Outgoing

ENTITIES = frozenset(schema.ENTITIES)
REQUEST_ENTITIES = frozenset({"withdrawal", "destruction", "transfer"})
MAX_IDS = 100  # a subscribe message is at most 4096 bytes anyway: about 100 ids
MAX_MINE_IDS = 20_000  # the user's requests kept per connection (resolved and grown)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NO_META = (None, None, None, None)


def frame_meta(text: str) -> tuple:
    """(entity, data.id, data.request_id, data.actor) of a data_update frame."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return _NO_META
    if not isinstance(message, dict):
        return _NO_META
    data = message.get("data")
    if not isinstance(data, dict):
        data = {}
    return message.get("entity"), data.get("id"), data.get("request_id"), data.get("actor")


class Filter:
    __slots__ = ("entities", "ids", "mine", "username", "mine_ids")

    def __init__(self, entities: frozenset | None, ids: frozenset | None, mine: bool, username: str,
                 mine_ids: set[str] | None = None) -> None:
        self.entities, self.ids, self.mine, self.username = entities, ids, mine, username
        self.mine_ids: set[str] = mine_ids if mine_ids is not None else set()

    def matches(self, event: Outgoing) -> bool:
        meta = event.meta
        if meta is None:
            meta = event.meta = frame_meta(event.text)
        entity, object_id, request_id, actor = meta
        mine = False
        if self.mine:
            if actor is not None and actor == self.username:
                mine = True
                # A request the user changes (creates, decides, sends back) is theirs from now on.
                grown = object_id if entity in REQUEST_ENTITIES else request_id if entity == "sendback" else None
                if grown is not None and len(self.mine_ids) < MAX_MINE_IDS:
                    self.mine_ids.add(grown)
            else:
                mine = object_id in self.mine_ids or (request_id is not None and request_id in self.mine_ids)
        if self.entities is not None and entity not in self.entities:
            return False
        if self.ids is None and not self.mine:
            return True
        if self.ids is not None and (object_id in self.ids or (request_id is not None and request_id in self.ids)):
            return True
        return mine

    def describe(self) -> dict:
        found: dict = {}
        if self.entities is not None:
            found["entities"] = sorted(self.entities)
        if self.ids is not None:
            found["ids"] = sorted(self.ids)
        if self.mine:
            found["mine"] = True
        return found


class FilterSpec:
    """A validated filter before `mine` is resolved: entities, ids (frozensets or None), mine."""

    __slots__ = ("entities", "ids", "mine")

    def __init__(self, entities: frozenset | None, ids: frozenset | None, mine: bool) -> None:
        self.entities, self.ids, self.mine = entities, ids, mine

    @property
    def everything(self) -> bool:
        return self.entities is None and self.ids is None and not self.mine


def _entities(value) -> frozenset | str:
    if not isinstance(value, list) or not value or len(value) > 2 * len(ENTITIES):
        return f'"entities" must be a non-empty list of {", ".join(schema.ENTITIES)}.'
    if not all(isinstance(item, str) and item in ENTITIES for item in value):
        return f'"entities" may only name {", ".join(schema.ENTITIES)}.'
    return frozenset(value)


def _ids(value) -> frozenset | str:
    if not isinstance(value, list) or not value or len(value) > MAX_IDS:
        return f'"ids" must be a list of 1 to {MAX_IDS} record ids.'
    ids = set()
    for item in value:
        if not isinstance(item, str) or not _UUID.match(item.lower()):
            return '"ids" must hold record ids (UUIDs).'
        ids.add(item.lower())
    return frozenset(ids)


FILTER_KEYS = frozenset({"type", "entities", "ids", "mine"})


def parse_message(message: dict) -> FilterSpec | str:
    """The filter of a `subscribe` message, or why it is not valid. Any other key is refused: a
    typo (`entity`) or a `unit` must not silently mean "the whole unit"."""
    if not FILTER_KEYS.issuperset(message):
        return 'A subscribe takes only "entities", "ids" and "mine".'
    entities = ids = None
    mine = False
    if "entities" in message:
        entities = _entities(message["entities"])
        if isinstance(entities, str):
            return entities
    if "ids" in message:
        ids = _ids(message["ids"])
        if isinstance(ids, str):
            return ids
    if "mine" in message:
        if not isinstance(message["mine"], bool):
            return '"mine" must be true or false.'
        mine = message["mine"]
    return FilterSpec(entities, ids, mine)


def parse_query(query: dict[str, list[str]]) -> FilterSpec | str | None:
    """The filter in a handshake's query (`entities=a,b&ids=x,y&mine=1`), None without one."""
    if not any(name in query for name in ("entities", "ids", "mine")):
        return None
    message: dict = {}
    if "entities" in query:
        message["entities"] = [item for item in query["entities"][0].split(",") if item]
    if "ids" in query:
        message["ids"] = [item for item in query["ids"][0].split(",") if item]
    if "mine" in query:
        value = query["mine"][0]
        if value not in ("1", "true", "0", "false"):
            return '"mine" must be 1 or 0.'
        message["mine"] = value in ("1", "true")
    return parse_message(message)
