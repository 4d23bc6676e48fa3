"""The audit actions of access changes and signatures (entity `user`) and of a unit's settings
(entity `unit`), and their words: registered with the audit trail's vocabulary when the app is ready
(backend/audit/vocabulary.py). Plain Python."""

ENTRY_WORDS: dict[str, str] = {
    "created": "Created",
    "deactivated": "Deactivated",
    "reactivated": "Reactivated",
    "unit_changed": "Moved to another unit",
    "role_changed": "Role changed",
    "password_changed": "Password changed",
    "signin_locked": "Sign-in locked (failed sign-ins)",
    "signin_unlocked": "Sign-in unlocked",
    "signature_failed": "Signature refused (wrong password)",
    "signature_locked": "Signing locked",
    "signature_unlocked": "Signing unlocked",
    "settings_changed": "Site settings changed",  # entity `unit`: its code, name or time zone
}
