import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class Unit(models.Model):
    """A site: the boundary of every user's visibility."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Role(models.TextChoices):
    REQUESTER = "requester", "Requester"
    APPROVER = "approver", "Approver"
    STORE = "store", "Store (custodian)"
    ADMIN = "admin", "Unit admin"


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null only for Django superusers that operate across units.
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, null=True, blank=True, related_name="users")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.REQUESTER)

    def has_role(self, *roles: str) -> bool:
        """Admins hold every role within their unit."""
        return self.role == Role.ADMIN or self.role in roles
