"""Signing in, refreshing, who am I, and the WebSocket ticket (docs/api.md, "Auth")."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from backend.accounts.tickets import PREFIX
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def approver():
    return UserFactory(unit=UnitFactory(code="north", name="North archive"), role="approver", username="north.approver")


def _sign_in(username: str, password: str):
    return APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json")


def test_sign_in_returns_tokens_whose_access_carries_unit_and_role(approver):
    response = _sign_in("north.approver", PASSWORD)
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}
    claims = AccessToken(response.json()["access"])
    assert (claims["unit_id"], claims["role"], claims["user_id"]) == (str(approver.unit_id), "approver", str(approver.id))


def test_a_wrong_password_is_401_without_tokens(approver):
    response = _sign_in("north.approver", "wrong")
    assert response.status_code == 401
    assert response.json()["code"] == "no_active_account"
    assert "access" not in response.json()


def test_a_missing_password_is_400(approver):
    response = APIClient().post("/api/auth/token/", {"username": "north.approver"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert set(response.json()["details"]) == {"password"}


def test_refresh_returns_a_working_access_token(approver):
    tokens = _sign_in("north.approver", PASSWORD).json()
    response = APIClient().post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200
    access = response.json()["access"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    assert client.get("/api/me/").json()["username"] == "north.approver"


def test_an_access_token_is_no_refresh_token(approver):
    tokens = _sign_in("north.approver", PASSWORD).json()
    response = APIClient().post("/api/auth/token/refresh/", {"refresh": tokens["access"]}, format="json")
    assert (response.status_code, response.json()["code"]) == (401, "token_not_valid")


def test_me_describes_the_user_and_its_unit(api, approver):
    response = api(approver).get("/api/me/")
    assert response.status_code == 200
    assert response.json() == {
        "id": str(approver.id),
        "username": "north.approver",
        "full_name": approver.get_full_name(),  # the printed name a signature manifests
        "role": "approver",
        "unit": {"id": str(approver.unit_id), "code": "north", "name": "North archive", "timezone": "UTC"},
    }


def test_a_ws_ticket_is_a_short_lived_single_key_in_redis(api, approver):
    # when a signed-in user asks for a ticket
    response = api(approver).post("/api/auth/ws-ticket/")

    # then it gets one, valid 30 s, and Redis holds it (for that user) with that expiry
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_in"} and body["expires_in"] == 30
    keys = redis.Redis.from_url(settings.KEYS_REDIS_URL)
    try:
        key = PREFIX + body["ticket"]
        assert keys.get(key).decode().split("|")[0] == str(approver.id)
        assert 0 < keys.ttl(key) <= 30
    finally:
        keys.delete(PREFIX + body["ticket"])
        keys.close()


def test_two_tickets_are_different(api, approver):
    client = api(approver)
    first, second = client.post("/api/auth/ws-ticket/").json()["ticket"], client.post("/api/auth/ws-ticket/").json()["ticket"]
    assert first != second and len(first) >= 32
    keys = redis.Redis.from_url(settings.KEYS_REDIS_URL)
    keys.delete(PREFIX + first, PREFIX + second)
    keys.close()


def test_a_ws_ticket_needs_a_bearer_token():
    response = APIClient().post("/api/auth/ws-ticket/")
    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
