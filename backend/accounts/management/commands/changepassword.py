"""`manage.py changepassword`, audited as made from the command line (the revocation runs on the save,
as for every new password: backend.accounts.services.RevokeOnPasswordChange)."""

from django.contrib.auth.management.commands import changepassword

from backend.accounts.services import access_change


class Command(changepassword.Command):
    def handle(self, *args, **options):
        with access_change(actor=None, reason="password changed with manage.py changepassword"):
            return super().handle(*args, **options)
