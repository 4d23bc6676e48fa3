from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "backend.accounts"
    label = "accounts"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        user_locked_out.connect(_locked_out, dispatch_uid="accounts.signin_locked_out")
        _stamp_every_token()
        from . import schema  # noqa: F401 - registers the OpenAPI scheme of StampedJWTAuthentication


def _stamp_every_token() -> None:
    """Every token SimpleJWT makes for a user (`AccessToken.for_user`, `RefreshToken.for_user`, by
    whatever caller) carries our password stamp (accounts.tokens.password_stamp: the user's
    password epoch, which a hasher upgrade does not change) instead of SimpleJWT's hash of the
    password hash, which an upgrade would change; StampedJWTAuthentication checks it."""
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import Token

    from .tokens import password_stamp

    made = Token.for_user.__func__
    if getattr(made, "stamped", False):
        return

    def for_user(cls, user):
        token = made(cls, user)
        if api_settings.CHECK_REVOKE_TOKEN:
            token[api_settings.REVOKE_TOKEN_CLAIM] = password_stamp(user)
        return token

    for_user.stamped = True
    Token.for_user = classmethod(for_user)


def _locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """django-axes' lockout, audited (its signal is the only place the lockout is known)."""
    from .services import signin_locked_out

    if username:
        signin_locked_out(username=username, address=ip_address or "")
