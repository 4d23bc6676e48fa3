"""The hash chain: what an entry's `hash` covers, and how it is computed.

`hash` = SHA-256 of the entry's canonical encoding, which includes `prev_hash` (the hash of the
unit's previous entry; GENESIS for the first). The canonical encoding is JSON with sorted keys, no
whitespace and UTF-8, of every field an inspector reads, with times in UTC to the microsecond (what
both databases store). Changing any of them, deleting an entry or inserting one breaks the link at
that point, which `selectors.audit_verify` reports.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

GENESIS = "0" * 64


def plain(value: Any) -> Any:
    """`value` as JSON-native data that reads back identically from either database's JSON column."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, float):
        raise TypeError("floats have no canonical encoding here; use strings or integers")
    return str(value)


def canonical_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def payload(entry) -> dict[str, Any]:
    """What `entry.hash` covers (an AuditEntry, saved or about to be)."""
    return {
        "id": str(entry.id),
        "unit": str(entry.unit_id),
        "position": entry.position,
        "at": canonical_time(entry.at),
        "actor": {
            "id": str(entry.actor_id) if entry.actor_id else None,
            "username": entry.actor_username,
            "full_name": entry.actor_full_name,
            "role": entry.actor_role,
        },
        "entity": entry.entity,
        "record_id": str(entry.record_id),
        "record_number": entry.record_number,
        "action": entry.action,
        "version": entry.version,
        "changes": entry.changes,
        "reason": entry.reason,
        "signature": str(entry.signature_id) if entry.signature_id else None,
        "job_id": str(entry.job_id) if entry.job_id else None,
        "client": {"ip": entry.client_ip, "user_agent": entry.user_agent},
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        # (only where set: entries written before it existed keep their hashes)
        **({"signature_digest": entry.signature_digest} if getattr(entry, "signature_digest", None) else {}),
    }


def entry_hash(entry) -> str:
    encoded = json.dumps(payload(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def binding_hash(signature, *, entity: str, record_id, version: int, content: dict[str, Any]) -> str:
    """What binds `signature` (a Signature) to one record: its signer, meaning and time with the
    record's identity, version and content (JSON-native, as `plain` makes it)."""
    encoded = json.dumps(
        {
            "signature": {
                "id": str(signature.id),
                "signer": {"id": str(signature.signer_id), "username": signature.signer_username,
                           "full_name": signature.signer_full_name},
                "meaning": signature.meaning,
                "signed_at": canonical_time(signature.signed_at),
            },
            "record": {"entity": entity, "id": str(record_id), "version": version, "content": plain(content)},
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def signature_digest(signature, signed) -> str:
    """SHA-256 of `signature` (a Signature: who signed, when, meaning what, from where) and of
    `signed`, its SignedRecord for the entry's record (None where it has none: a crate a decision
    moved, a refused decision), as an entry written under it holds them (`signature_digest`)."""
    bound = None if signed is None else {
        "id": str(signed.id), "entity": signed.entity, "record_id": str(signed.record_id),
        "record_number": signed.record_number, "version": signed.version, "binding": signed.binding,
    }
    encoded = json.dumps(
        {
            "signature": {
                "id": str(signature.id), "unit": str(signature.unit_id),
                "signer": {"id": str(signature.signer_id), "username": signature.signer_username,
                           "full_name": signature.signer_full_name},
                "meaning": signature.meaning, "action": signature.action, "entity": signature.entity,
                "signed_at": canonical_time(signature.signed_at),
                "client": {"ip": signature.client_ip, "user_agent": signature.user_agent},
            },
            "bound": bound,
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
