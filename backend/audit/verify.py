"""The chain check that knows what should be there.

For every unit known to the Unit table, to the checkpoints (not only units that still have
entries) or, when every unit is verified, to the entries, in this order:

0. a unit with entries is known to the Unit table or to its checkpoints (`unit_unknown`);

1. every checkpoint is signed by a known key (`checkpoint_signature_invalid`);
2. every purge record is covered by a checkpoint written after it (`purge_not_checkpointed`), its
   entries were beyond retention by the checkpoints' own signed times (`purge_inside_retention`),
   and it agrees with any checkpoint at its position (`checkpoint_missing_from_chain`);
3. no entry lies at or below the last purge's position (or 0) (`entry_outside_chain`); the chain,
   walked from the last purge: positions follow (`entries_missing`), each entry links to
   the previous one (`prev_hash_mismatch`) and matches its hash (`hash_mismatch`), and each
   checkpoint's position holds the hash it signed (`checkpoint_missing_from_chain`: the chain was
   rewritten between the previous checkpoint and this one);
4. the chain reaches the last checkpoint (`tail_truncated`; `unit_wiped` when nothing is left);
5. each signed entry's `signature_digest` still describes its signature and binding rows
   (`signature_mismatch`);

then the database's checkpoints are compared with the sink's copy (`sink_mismatch`): a database
restored from an older copy lacks the newer ones, an edited checkpoint differs, and a sink edited
on its own shows too. `first_bad` names the first rule broken: `rule`, a `reason` in words, and
where (`unit`, `unit_code`, `position`, and the entry's, checkpoint's or purge's `id`).

Incremental (`start`): from a checkpoint an earlier run verified, whose signature and place in the
chain are checked again; the entries and checkpoints after it, and every purge record, are read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from .chain import GENESIS, canonical_time, entry_hash, signature_digest
from .checkpoints import checkpoint_document, payload
from .keys import public_keys, signature_valid
from .models import AuditCheckpoint, AuditEntry, AuditPurge, Signature, SignedRecord
from .sinks import read_copy, sink

ENTRY_REASONS = {
    "entries_missing": "entries {start} to {end} of the unit's chain are missing",
    "prev_hash_mismatch": "its prev_hash is not the previous entry's hash (an entry was removed, inserted or edited)",
    "hash_mismatch": "its content does not match its hash (the entry was edited)",
    "entry_outside_chain": "it lies at or before position {floor}, where the unit's chain does not reach (before its "
                           "first entry, or among the entries a purge removed): it was put in by hand",
}


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad: dict[str, Any] | None
    sink: str = "not configured"  # compared | not configured | <why not>
    units: dict[str, UnitVerification] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad": self.first_bad, "sink": self.sink}


@dataclass
class UnitVerification:
    unit_id: uuid.UUID
    unit_code: str
    entries: int = 0
    first_bad: dict[str, Any] | None = None
    through: AuditCheckpoint | None = None  # the last checkpoint found in the chain

    @property
    def ok(self) -> bool:
        return self.first_bad is None


class _Broken(Exception):  # noqa: N818 - control flow: the first broken rule of a unit
    def __init__(self, rule: str, reason: str, **where: Any) -> None:
        super().__init__(reason)
        self.rule, self.reason, self.where = rule, reason, where


def retention(at: datetime) -> datetime:
    """The retention horizon as it stood at `at` (services.retention_horizon's arithmetic)."""
    return at - timedelta(days=round(365.25 * settings.AUDIT_RETENTION_YEARS))


def known_units(unit_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, str]:
    """{id: code}: the Unit table's and the checkpoints' (a unit whose row was deleted stays known)."""
    units = AuditEntry._meta.get_field("unit").related_model.objects.all()
    checkpoints = AuditCheckpoint.objects.all()
    if unit_ids is not None:
        units, checkpoints = units.filter(id__in=unit_ids), checkpoints.filter(unit_id__in=unit_ids)
    known = dict(units.values_list("id", "code"))
    # (distinct ids first: an index-only scan; a code only for a unit the Unit table lost)
    for unit_id in set(checkpoints.order_by().values_list("unit_id", flat=True).distinct()) - set(known):
        known[unit_id] = checkpoints.filter(unit_id=unit_id).values_list("unit_code", flat=True).first()
    if unit_ids is None:  # entries under a unit neither knows (unit_verify: `unit_unknown`), by its id
        for unit_id in entry_unit_ids() - set(known):
            known[unit_id] = unit_id.hex
    return known


def entry_unit_ids() -> set[uuid.UUID]:
    """The unit ids the entries name, one probe of the (unit, position) index per unit (a loose index
    scan: flat in the trail's length, where a DISTINCT reads every entry at each scheduled run)."""
    found: set[uuid.UUID] = set()
    rows = AuditEntry.objects.order_by("unit_id").values_list("unit_id", flat=True)
    after = rows.first()
    while after is not None:
        found.add(after)
        after = rows.filter(unit_id__gt=after).first()
    return found


def _signed(checkpoint: AuditCheckpoint, keys) -> bool:
    key = keys.get(checkpoint.key_id)
    return key is not None and signature_valid(key, payload(checkpoint), checkpoint.signature)


def _check_signature(checkpoint: AuditCheckpoint, keys) -> None:
    if not _signed(checkpoint, keys):
        known = checkpoint.key_id in keys
        raise _Broken(
            "checkpoint_signature_invalid",
            "the checkpoint's signature does not match its content (it was edited or forged)" if known
            else f"the checkpoint is signed with a key this server does not know ({checkpoint.key_id})",
            id=str(checkpoint.id), position=checkpoint.position, checkpoint=str(checkpoint.id),
        )


def _check_purges(unit_id: uuid.UUID, keys) -> tuple[int, str]:
    """Rule 2 for every purge record of the unit; returns the chain's floor (position, hash)."""
    floor = (0, GENESIS)
    for purge in AuditPurge.objects.filter(unit_id=unit_id).order_by("through_position", "at"):
        where = {"id": str(purge.id), "position": purge.through_position, "purge": str(purge.id)}
        cover = (AuditCheckpoint.objects.filter(unit_id=unit_id, purged_through__gte=purge.through_position)
                 .order_by("at").first())
        if cover is None:
            raise _Broken("purge_not_checkpointed", "no signed checkpoint records this purge: it was not made by the "
                          "purge service (a forged purge record)", **where)
        _check_signature(cover, keys)
        # Entries after the last checkpoint below the purged position were written after its signed
        # time; if that is inside retention at the covering checkpoint's time, so were they.
        below = (AuditCheckpoint.objects.filter(unit_id=unit_id, position__lt=purge.through_position, at__lte=cover.at)
                 .order_by("-at").first())
        if purge.before > retention(purge.at) or (below is not None and below.at > retention(cover.at)):
            raise _Broken("purge_inside_retention", "the purge removed entries younger than "
                          f"AUDIT_RETENTION_YEARS ({settings.AUDIT_RETENTION_YEARS})", **where)
        same = AuditCheckpoint.objects.filter(unit_id=unit_id, position=purge.through_position).exclude(
            hash=purge.through_hash).first()
        if same is not None:
            raise _Broken("checkpoint_missing_from_chain", "the purge record's hash is not the one the checkpoint at "
                          "its position signed", **where, checkpoint=str(same.id))
        if purge.through_position > floor[0]:
            floor = (purge.through_position, purge.through_hash)
    return floor


def _check_known(unit_id: uuid.UUID, checkpoints: list[AuditCheckpoint]) -> None:
    """A unit with entries is in the Unit table (its row is PROTECTed) or, once gone, in its checkpoints."""
    if checkpoints or AuditEntry._meta.get_field("unit").related_model.objects.filter(id=unit_id).exists():
        return
    first = AuditEntry.objects.filter(unit_id=unit_id).order_by("position").first()
    if first is not None:
        raise _Broken("unit_unknown", "entries of a unit neither the Unit table nor any checkpoint knows: its row was "
                      "deleted, or the entries were put in by hand", id=str(first.id), position=first.position)


def _check_outside(unit_id: uuid.UUID, floor: int) -> None:
    """No entry at or below the chain's floor (0, or the last purge's position): the walk never
    reads there, yet the trail and a record's history would show it."""
    stray = AuditEntry.objects.filter(unit_id=unit_id, position__lte=floor).order_by("position").first()
    if stray is not None:
        raise _Broken("entry_outside_chain", ENTRY_REASONS["entry_outside_chain"].format(floor=floor),
                      id=str(stray.id), position=stray.position)


def _walk(result: UnitVerification, start: tuple[int, str], checkpoints: list[AuditCheckpoint], chunk_size: int) -> None:
    """Rules 3, 4 and 5 from `start` (position, hash); `checkpoints` are those after it, in order."""
    position, prev_hash = start
    pending = iter(checkpoints)
    expected = next(pending, None)
    matched = start[0]
    entries = AuditEntry.objects.filter(unit_id=result.unit_id, position__gt=position).order_by("position")
    signed: list[AuditEntry] = []  # rule 5, read in the same pass: checked a chunk at a time
    for entry in entries.iterator(chunk_size=chunk_size):
        result.entries += 1
        if entry.signature_digest:
            signed.append(entry)
        if result.entries % chunk_size == 0:
            _signatures_match(signed)
            signed = []
        where = {"id": str(entry.id), "position": entry.position}
        if entry.position != position + 1:
            reason = ENTRY_REASONS["entries_missing"].format(start=position + 1, end=entry.position - 1)
            raise _Broken("entries_missing", reason, **where)
        if entry.prev_hash != prev_hash:
            raise _Broken("prev_hash_mismatch", ENTRY_REASONS["prev_hash_mismatch"], **where)
        if entry_hash(entry) != entry.hash:
            raise _Broken("hash_mismatch", ENTRY_REASONS["hash_mismatch"], **where)
        position, prev_hash = entry.position, entry.hash
        while expected is not None and expected.position == position:
            if expected.hash != entry.hash:
                raise _Broken(
                    "checkpoint_missing_from_chain",
                    f"the chain was rewritten: position {position} no longer holds the hash its checkpoint signed "
                    f"(the change lies after position {matched})",
                    **where, checkpoint=str(expected.id), after_position=matched,
                )
            matched, result.through = position, expected
            expected = next(pending, None)
    _signatures_match(signed)
    if expected is not None:
        last = max(checkpoints, key=lambda c: c.position)
        wiped = position == start[0] and not AuditEntry.objects.filter(unit_id=result.unit_id).exists()
        raise _Broken(
            "unit_wiped" if wiped else "tail_truncated",
            f"the unit's entries are gone: its checkpoints vouch for {last.position}" if wiped
            else f"the chain ends at position {position}, its checkpoints vouch for {last.position}",
            id=str(last.id), position=position + 1, checkpoint=str(last.id), checkpoint_position=last.position,
        )


def _signatures_match(entries: list[AuditEntry]) -> None:
    """Rule 5 for signed entries: each one's `signature_digest` (inside its hash) against the
    signature and binding rows as they are now (`signature_mismatch`)."""
    if not entries:
        return
    ids = {e.signature_id for e in entries}
    signatures = Signature.objects.in_bulk(ids)
    bound = {(s.signature_id, s.record_id): s for s in SignedRecord.objects.filter(
        signature_id__in=ids, record_id__in={e.record_id for e in entries})}
    for entry in entries:
        signature = signatures.get(entry.signature_id)
        if signature is None or signature_digest(signature, bound.get((entry.signature_id, entry.record_id))) != \
                entry.signature_digest:
            raise _Broken("signature_mismatch", "the signature this entry was written under, or its binding to the "
                          "record, is not what it was then (rewritten, moved to another record or removed)",
                          id=str(entry.id), position=entry.position, signature=str(entry.signature_id))


def unit_verify(unit_id: uuid.UUID, code: str, *, start: AuditCheckpoint | None = None, chunk_size: int = 2000,
                keys=None) -> UnitVerification:
    keys = public_keys() if keys is None else keys
    result = UnitVerification(unit_id, code)
    checkpoints = AuditCheckpoint.objects.filter(unit_id=unit_id)
    if start is not None:
        checkpoints = checkpoints.filter(position__gte=start.position)
    checkpoints = list(checkpoints.order_by("position", "at"))
    try:
        _check_known(unit_id, checkpoints)
        for checkpoint in checkpoints:
            _check_signature(checkpoint, keys)
        floor = _check_purges(unit_id, keys)
        _check_outside(unit_id, floor[0])
        begin = floor
        if start is not None and start.position > floor[0]:
            anchor = AuditEntry.objects.filter(unit_id=unit_id, position=start.position).first()
            if anchor is None or anchor.hash != start.hash or entry_hash(anchor) != anchor.hash:
                _walk(result, floor, [start], chunk_size)  # says what is wrong there, and where
            begin = (start.position, start.hash)
            result.through = start
        _walk(result, begin, [c for c in checkpoints if c.position > begin[0]], chunk_size)
        if result.through is None and checkpoints and checkpoints[-1].position <= floor[0]:
            result.through = checkpoints[-1]
    except _Broken as broken:
        result.first_bad = {"id": None, "unit": str(unit_id), "unit_code": code, **broken.where,
                            "rule": broken.rule, "reason": broken.reason}
    return result


def sink_compare(unit_ids: list[uuid.UUID] | None, keys, since: datetime | None = None) -> tuple[str, dict | None]:
    """Rule 5: (how it went, the first mismatch or None). `since`: only checkpoints from then on."""
    out = sink()
    path: Path | None = out.copy_path() if out is not None else None
    if path is None:
        return "not configured", None
    wanted = {str(u) for u in unit_ids} if unit_ids is not None else None
    database = AuditCheckpoint.objects.all()
    if unit_ids is not None:
        database = database.filter(unit_id__in=unit_ids)
    if since is not None:
        database = database.filter(at__gte=since)
    stored = {str(c.id): c for c in database}

    def bad(detail: str, document: dict | None, **where) -> tuple[str, dict]:
        document = document or {}
        return "compared", {
            "id": document.get("id"), "unit": document.get("unit"), "unit_code": document.get("unit_code"),
            "position": document.get("position"), "checkpoint": document.get("id"), **where, "rule": "sink_mismatch",
            "reason": f"the checkpoints outside the database disagree with the database's: {detail}",
        }

    if not path.exists():
        return bad(f"{path} is missing", None) if stored else ("compared", None)
    cutoff = canonical_time(since) if since is not None else None
    seen: set[str] = set()
    for line, document in read_copy(path):
        if document is None or not {"id", "unit", "at", "key_id", "signature"} <= set(document):
            return bad(f"line {line} of the sink is not a checkpoint", None, sink_line=line)
        if wanted is not None and document["unit"] not in wanted or cutoff is not None and document["at"] < cutoff:
            continue
        seen.add(document["id"])
        mine = stored.get(document["id"])
        if mine is None:
            return bad("a checkpoint in the sink is not in the database (restored from an older copy, or deleted)",
                       document, sink_line=line)
        if checkpoint_document(mine) != {k: document.get(k) for k in checkpoint_document(mine)}:
            signed = "edited in the sink" if not _sink_signed(document, keys) else "edited in the database"
            return bad(f"the checkpoint differs ({signed})", document, sink_line=line)
    missing = sorted((c for i, c in stored.items() if i not in seen), key=lambda c: (c.at, c.position))
    if missing:
        return bad("a checkpoint in the database is not in the sink (the sink lost or was stripped of it)",
                   checkpoint_document(missing[0]))
    return "compared", None


def _sink_signed(document: dict, keys) -> bool:
    try:
        draft = AuditCheckpoint(
            id=uuid.UUID(document["id"]), unit_id=uuid.UUID(document["unit"]), position=int(document["position"]),
            hash=document["hash"], purged_through=int(document["purged_through"]),
            at=datetime.fromisoformat(document["at"]), key_id=document["key_id"], signature=document["signature"],
        )
    except (KeyError, TypeError, ValueError):
        return False
    return _signed(draft, keys)


def audit_verify(unit_ids: list[uuid.UUID] | None = None, chunk_size: int = 2000, *, compare_sink: bool = True) -> Verification:
    """Verify every unit (or `unit_ids`) in full, then the sink; the first broken rule."""
    keys = public_keys()
    units = {}
    first_bad = None
    for unit_id, code in sorted(known_units(unit_ids).items(), key=lambda item: str(item[0])):
        units[str(unit_id)] = result = unit_verify(unit_id, code, chunk_size=chunk_size, keys=keys)
        first_bad = first_bad or result.first_bad
    status = "not compared"
    if compare_sink:
        status, mismatch = sink_compare(unit_ids, keys)
        first_bad = first_bad or mismatch
    entries = sum(result.entries for result in units.values())
    return Verification(first_bad is None, entries, first_bad, status, units)
