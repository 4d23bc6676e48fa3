from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db import transaction

from .models import Unit, User
from .services import user_access_saved, user_set_password


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "timezone", "id"]
    search_fields = ["code", "name"]


class RevokingPasswordChangeForm(AdminPasswordChangeForm):
    """The admin's "change password" form, through the service that revokes the old tokens."""

    def save(self, commit=True):
        return user_set_password(user=self.user, password=self.cleaned_data["password1"])


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "unit", "role", "is_active", "is_superuser"]
    list_filter = ["unit", "role", "is_active", "is_superuser"]
    fieldsets = (*BaseUserAdmin.fieldsets, ("Unit and role", {"fields": ("unit", "role")}))
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("Unit and role", {"fields": ("unit", "role")}))
    change_password_form = RevokingPasswordChangeForm

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        with transaction.atomic():
            before = User.objects.select_for_update().only("is_active", "unit_id").get(pk=obj.pk)
            super().save_model(request, obj, form, change)
            # Deactivated or moved here: the same revocation as through the service.
            user_access_saved(user=obj, was_active=before.is_active, was_unit_id=before.unit_id)
