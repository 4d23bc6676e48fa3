"""The checkpoint signing key: Ed25519, held outside the database.

AUDIT_CHECKPOINT_KEY is the private key: PEM text, the path of a PEM file (PKCS#8), or a secret of
at least 32 bytes (base64url of exactly 32 bytes is the raw key; anything else is hashed into one).
Unset with AUDIT_CHECKPOINT_KEY_GENERATE (development and tests), a key is made once under var/.
Production refuses to start without it (settings/production.py).

Each key has an id (AUDIT_CHECKPOINT_KEY_ID; default: a fingerprint of its public key). Verify
trusts the current key's public half and every key in AUDIT_CHECKPOINT_PUBLIC_KEYS ({id: public
key, base64 of the 32 raw bytes}), so checkpoints signed before a rotation still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class KeyMissing(ImproperlyConfigured):
    """No signing key is configured (and none may be generated here)."""


def _b64decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_text(public: Ed25519PublicKey) -> str:
    """The public key as AUDIT_CHECKPOINT_PUBLIC_KEYS lists it."""
    return base64.b64encode(raw_public(public)).decode()


def fingerprint(public: Ed25519PublicKey) -> str:
    return "ed25519-" + hashlib.sha256(raw_public(public)).hexdigest()[:16]


def parse_private(value: str) -> Ed25519PrivateKey:
    """AUDIT_CHECKPOINT_KEY's value as a key (see the module's docstring for the forms)."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(value.encode(), password=None)
    elif value.startswith(("/", "./", "~")) or value.endswith(".pem"):
        key = serialization.load_pem_private_key(Path(value).expanduser().read_bytes(), password=None)
    else:
        try:
            raw = _b64decode(value)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            if len(value) < 32:
                raise ImproperlyConfigured("AUDIT_CHECKPOINT_KEY is too short: 32 random bytes or more")
            raw = hashlib.sha256(value.encode()).digest()
        key = Ed25519PrivateKey.from_private_bytes(raw)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("AUDIT_CHECKPOINT_KEY is not an Ed25519 key")
    return key


def parse_public(value: str) -> Ed25519PublicKey:
    value = value.strip()
    if value.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(value.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ImproperlyConfigured("AUDIT_CHECKPOINT_PUBLIC_KEYS holds a key that is not Ed25519")
        return key
    return Ed25519PublicKey.from_public_bytes(_b64decode(value))


def _generated(path: Path) -> Ed25519PrivateKey:
    """The development key under var/, made on first use (0600; O_EXCL, so two processes starting
    at once end up with the one that won)."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
    return parse_private(str(path))


@dataclass(frozen=True)
class Signer:
    key_id: str
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()


@lru_cache(maxsize=4)
def _signer(value: str, key_id: str, generate_at: str) -> Signer:
    if value:
        private = parse_private(value)
    elif generate_at:
        private = _generated(Path(generate_at))
    else:
        raise KeyMissing("AUDIT_CHECKPOINT_KEY is not set: checkpoints cannot be signed")
    return Signer(key_id or fingerprint(private.public_key()), private)


def signer() -> Signer:
    generate = str(settings.AUDIT_CHECKPOINT_KEY_FILE) if settings.AUDIT_CHECKPOINT_KEY_GENERATE else ""
    return _signer(settings.AUDIT_CHECKPOINT_KEY, settings.AUDIT_CHECKPOINT_KEY_ID, generate)


@lru_cache(maxsize=4)
def _public_keys(configured: tuple[tuple[str, str], ...]) -> dict[str, Ed25519PublicKey]:
    return {key_id: parse_public(text) for key_id, text in configured}


def public_keys() -> dict[str, Ed25519PublicKey]:
    """{key id: public key} that verify trusts: the configured ones and the current signer's."""
    keys = dict(_public_keys(tuple(sorted(settings.AUDIT_CHECKPOINT_PUBLIC_KEYS.items()))))
    try:
        current = signer()
    except KeyMissing:
        return keys
    keys.setdefault(current.key_id, current.private.public_key())
    return keys


def signature_valid(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
