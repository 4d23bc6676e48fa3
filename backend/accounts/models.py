import uuid
import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models, transaction


def validate_timezone(name: str) -> None:
    if name not in zoneinfo.available_timezones():
        raise ValidationError(f"{name!r} is not an IANA time zone (e.g. Europe/Zurich).")


class Unit(models.Model):
    """A site: the boundary of every user's visibility."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    # Where the unit is: the console shows times in this zone (the server stores and sends UTC).
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def save(self, *args, **kwargs):
        # One transaction for the save and the audit entry of a settings change its signal writes
        # (accounts.services.unit_after_save): both commit, or neither.
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)


class Role(models.TextChoices):
    REQUESTER = "requester", "Requester"
    APPROVER = "approver", "Approver"
    STORE = "store", "Store (custodian)"
    ADMIN = "admin", "Unit admin"
    # Quality assurance: reads and reviews the unit's audit trail, places and releases legal holds;
    # files and decides no request.
    QA = "qa", "Quality assurance"


# The roles whose holders sign (decisions, audit-trail reviews, legal holds): each needs a printed
# name, which every signature manifests (21 CFR Part 11 §11.50(a)(1)). Admins hold every role.
SIGNING_ROLES = (Role.APPROVER, Role.ADMIN, Role.QA)


def printed_name_missing(role: str, first_name: str, last_name: str) -> bool:
    return role in SIGNING_ROLES and not f"{first_name or ''} {last_name or ''}".strip()


PRINTED_NAME_REQUIRED = "Someone who signs needs a printed name: give a first and last name (Part 11 §11.50)."


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null only for Django superusers that operate across units.
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, null=True, blank=True, related_name="users")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.REQUESTER)
    # Electronic signatures: locked after SIGNATURE_MAX_FAILURES wrong passwords within
    # SIGNATURE_FAILURE_WINDOW_MINUTES, until a unit admin unlocks (accounts.signatures).
    signing_locked_at = models.DateTimeField(null=True, blank=True)
    signing_unlocked_at = models.DateTimeField(null=True, blank=True)
    # What tokens and tickets carry of the password (accounts.tokens.password_stamp): a new password
    # changes it, a re-hash of the same password (a hasher upgrade at sign-in or signature) does not.
    password_epoch = models.UUIDField(default=uuid.uuid4, editable=False)

    def save(self, *args, **kwargs):
        if self._password is not None:  # set_password ran: a new password (not a re-hash)
            self.password_epoch = uuid.uuid4()
            fields = kwargs.get("update_fields")
            if fields is not None and "password" in fields and "password_epoch" not in fields:
                kwargs["update_fields"] = [*fields, "password_epoch"]
        # One transaction for the save and what its signals write: the audit entry of an access
        # change and the revocation of a new password (accounts.services) commit with it or not at all.
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        if printed_name_missing(self.role, self.first_name, self.last_name):
            raise ValidationError({"first_name": PRINTED_NAME_REQUIRED})

    def has_role(self, *roles: str) -> bool:
        """Admins hold every role within their unit."""
        return self.role == Role.ADMIN or self.role in roles
