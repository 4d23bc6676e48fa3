from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import Unit, User


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "id"]
    search_fields = ["code", "name"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "unit", "role", "is_active", "is_superuser"]
    list_filter = ["unit", "role", "is_active", "is_superuser"]
    fieldsets = (*BaseUserAdmin.fieldsets, ("Unit and role", {"fields": ("unit", "role")}))
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("Unit and role", {"fields": ("unit", "role")}))
