from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from backend.common.admin import ReadOnlyAdmin

from .models import Unit, User
from .services import access_change, user_create_check, user_set_password

REASON = forms.CharField(
    label="Reason for the change", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
    help_text="Kept in the audit trail with your name (GMP: who changed access, when and why).",
)


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    """Units are made and their settings changed here (each change audited in the unit's trail with
    this admin, services.unit_after_save); never deleted: a unit's trail outlives it."""

    list_display = ["code", "name", "timezone", "id"]
    search_fields = ["code", "name"]

    def save_model(self, request, obj, form, change):
        with transaction.atomic(), access_change(actor=request.user, reason=""):
            super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReasonedPasswordChangeForm(AdminPasswordChangeForm):
    """The admin's "change password" form, through the service (audited with the admin and reason)."""

    change_reason = REASON

    def save(self, commit=True):  # the admin making it is in the access_change context (below)
        return user_set_password(user=self.user, password=self.cleaned_data["password1"],
                                 reason=self.cleaned_data["change_reason"])


class ReasonedChangeForm(UserChangeForm):
    change_reason = REASON


class ReasonedCreationForm(AdminUserCreationForm):
    change_reason = REASON


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "unit", "role", "is_active", "is_superuser"]
    list_filter = ["unit", "role", "is_active", "is_superuser"]
    fieldsets = (*BaseUserAdmin.fieldsets, ("Unit and role", {"fields": ("unit", "role")}),
                 ("Why", {"fields": ("change_reason",)}))
    # One who signs needs a printed name (User.clean refuses a signing role without one).
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("Printed name", {"fields": ("first_name", "last_name")}),
                     ("Unit and role", {"fields": ("unit", "role")}),
                     ("Why", {"fields": ("change_reason",)}))
    form = ReasonedChangeForm
    add_form = ReasonedCreationForm
    change_password_form = ReasonedPasswordChangeForm

    def user_change_password(self, request, id, form_url=""):
        with access_change(actor=request.user, reason=""):
            return super().user_change_password(request, id, form_url)

    def has_delete_permission(self, request, obj=None) -> bool:
        # An account is deactivated (audited, revoking), never deleted: its name stays on what it did.
        return False

    def save_model(self, request, obj, form, change):
        reason = form.cleaned_data.get("change_reason", "")
        # Created, deactivated, moved or given another role here: the save audits it (once) with this
        # admin and reason, and revokes, as every save of a user does (accounts.services).
        with transaction.atomic(), access_change(actor=request.user, reason=reason, creating=not change):
            if not change:
                user_create_check(obj)
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        # The groups and permissions of the form (saved after the user): audited with the same admin and reason.
        with access_change(actor=request.user, reason=form.cleaned_data.get("change_reason", ""), creating=not change):
            super().save_related(request, form, formsets, change)


class DeletesAsActor:
    """An admin whose deletes are access changes (audited by their signals in accounts.services):
    made inside `access_change`, so the entries name this admin as their actor."""

    def delete_model(self, request, obj):
        with transaction.atomic(), access_change(actor=request.user, reason=""):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic(), access_change(actor=request.user, reason=""):
            super().delete_queryset(request, queryset)


class AuditedAccessAttemptAdmin(DeletesAsActor, AccessAttemptAdmin):
    """django-axes' admin deletes a locked attempt, which lifts the lock: the unlock is audited by the
    delete (services.attempt_deleted), with this admin as its actor."""

    def has_change_permission(self, request, obj=None) -> bool:  # (every field is read-only anyway)
        return request.method in ("GET", "HEAD") and super().has_change_permission(request, obj)


class ReadOnlyAccessLogAdmin(ReadOnlyAdmin, AccessLogAdmin):
    """Who signed in and out, when and from where: django-axes' admin deletes these; here nobody does."""


class ReadOnlyAccessFailureLogAdmin(ReadOnlyAdmin, AccessFailureLogAdmin):
    """Every failed sign-in: django-axes' admin deletes these; here nobody does."""


for model, model_admin in ((AccessLog, ReadOnlyAccessLogAdmin), (AccessFailureLog, ReadOnlyAccessFailureLogAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
        admin.site.register(model, model_admin)

if admin.site.is_registered(AccessAttempt):  # (axes.admin, imported above, registers its own unless told not to)
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, AuditedAccessAttemptAdmin)


class ReadOnlyBlacklistedTokenAdmin(ReadOnlyAdmin, BlacklistedTokenAdmin):
    """SimpleJWT's admin edits and deletes blacklist rows, and a deleted row revives the refresh token
    it revoked (a rotated one, or one a deactivation, move or password change revoked) without a trace.
    Here the list is read-only: a revocation is undone by nobody; a new sign-in issues a new token."""


if admin.site.is_registered(BlacklistedToken):  # (simplejwt's admin, imported above, registers its own)
    admin.site.unregister(BlacklistedToken)
    admin.site.register(BlacklistedToken, ReadOnlyBlacklistedTokenAdmin)


class AuditedGroupAdmin(DeletesAsActor, GroupAdmin):
    """A group's permissions are its members' (services.group_permissions_changed audits each change
    for each member, services.group_deleted a deleted group's): saved here with this admin as actor."""

    def save_related(self, request, form, formsets, change):
        with transaction.atomic(), access_change(actor=request.user, reason=""):
            super().save_related(request, form, formsets, change)


if admin.site.is_registered(Group):  # (django.contrib.auth's admin registers its own)
    admin.site.unregister(Group)
    admin.site.register(Group, AuditedGroupAdmin)
