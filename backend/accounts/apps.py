from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "backend.accounts"
    label = "accounts"

    def ready(self) -> None:
        from axes.models import AccessAttempt
        from axes.signals import user_locked_out
        from django.contrib.auth.models import Group
        from django.contrib.auth.signals import user_login_failed
        from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

        from backend.audit.vocabulary import actions_register

        from . import simplejwt_stamp
        from .services import (
            access_after_save,
            access_before_save,
            attempt_deleted,
            grants_changed,
            group_deleted,
            group_permissions_changed,
            unit_after_save,
            unit_before_save,
        )
        from .signin import password_check_failed
        from .vocabulary import ENTRY_WORDS

        actions_register(ENTRY_WORDS)  # what the trail's `user` entries are called
        user_locked_out.connect(_locked_out, dispatch_uid="accounts.signin_locked_out")
        # A lockout lifted by deleting its attempts, whoever deletes them, is audited (services.py).
        post_delete.connect(attempt_deleted, sender=AccessAttempt, dispatch_uid="accounts.attempt_deleted")
        # Every save of a user that creates it or changes its access is audited (services.py).
        user = self.get_model("User")
        pre_save.connect(access_before_save, sender=user, dispatch_uid="accounts.access_before_save")
        post_save.connect(access_after_save, sender=user, dispatch_uid="accounts.access_after_save")
        # and so is every group or permission given to or taken from a user, from either side
        m2m_changed.connect(grants_changed, sender=user.groups.through, dispatch_uid="accounts.groups_changed")
        m2m_changed.connect(grants_changed, sender=user.user_permissions.through, dispatch_uid="accounts.perms_changed")
        pre_delete.connect(group_deleted, sender=Group, dispatch_uid="accounts.group_deleted")  # (links go by cascade)
        # and every permission given to or taken from a group, for each of its members
        m2m_changed.connect(group_permissions_changed, sender=Group.permissions.through,
                            dispatch_uid="accounts.group_permissions_changed")
        # A unit's settings changed (code, name, time zone): audited in its own trail (services.py).
        unit = self.get_model("Unit")
        pre_save.connect(unit_before_save, sender=unit, dispatch_uid="accounts.unit_before_save")
        post_save.connect(unit_after_save, sender=unit, dispatch_uid="accounts.unit_after_save")
        # What the per-username sign-in rate counts: a password check that failed (signin.py).
        user_login_failed.connect(password_check_failed, dispatch_uid="accounts.password_check_failed")
        simplejwt_stamp.install()
        from . import schema  # noqa: F401 - registers the OpenAPI scheme of StampedJWTAuthentication


def _locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """django-axes' lockout, audited (its signal is the only place the lockout is known)."""
    from .services import signin_locked_out

    if username:
        signin_locked_out(username=username, address=ip_address or "")
