from rest_framework_simplejwt.serializers import TokenObtainPairSerializer


class UnitTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Access tokens carry the user's `unit_id` and `role` (docs/api.md, "Auth")."""

    @classmethod
    def get_token(cls, user):
        token = super().get_token(user)
        token["unit_id"] = str(user.unit_id) if user.unit_id else None
        token["role"] = user.role
        return token
