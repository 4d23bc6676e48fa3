"""The API's one error shape, `{code, message, details?}`, for every way a call can go wrong."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from backend.events.models import OutboxEvent
from backend.records.models import Crate, TransferRequest, WithdrawalRequest
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="own"))


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/crates/", "/api/me/", "/api/withdrawal-requests/", "/api/jobs/"])
def test_no_credentials_is_401_not_authenticated(path):
    response = APIClient().get(path)
    assert response.status_code == 401
    assert response.json() == {"code": "not_authenticated", "message": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header,code",
    [("Bearer garbage", "token_not_valid"), ("Bearer a.b.c", "token_not_valid"), ("Bearer ", "bad_authorization_header")],
)
def test_a_garbage_bearer_token_is_401(header, code):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/crates/")
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message"}
    assert response.json()["code"] == code and response.json()["message"]


def test_a_token_signed_with_another_key_is_401(staff):
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(staff["admin"])
    forged = str(token).rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    response = client.get("/api/crates/")
    assert (response.status_code, response.json()["code"]) == (401, "token_not_valid")


def test_a_deactivated_users_token_stops_working(api, staff):
    client = api(staff["admin"])
    staff["admin"].is_active = False
    staff["admin"].save()
    assert client.get("/api/crates/").status_code == 401


# --- optimistic concurrency --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["body", "if-match", "if-match-etag"])
@pytest.mark.parametrize("target", ["crate", "request", "action"])
def test_a_stale_version_is_409_and_changes_nothing(api, staff, enqueued, how, target):
    # given an object at version 2 and a client that saw version 1
    if target == "crate":
        obj = CrateFactory(unit=staff["store"].unit, version=2)
        path, body = f"/api/crates/{obj.id}/", {"location": "Elsewhere"}
    else:
        obj = make_request("withdrawal", staff["requester"])
        WithdrawalRequest.objects.filter(id=obj.id).update(version=2)
        path, body = f"/api/withdrawal-requests/{obj.id}/", {"reason": "edited", "change_reason": "clarified"}
        if target == "action":
            path, body = f"{path}approve/", signed("approve")
    headers = {}
    if how == "body":
        body["version"] = 1
    else:
        headers["HTTP_IF_MATCH"] = '"1"' if how == "if-match" else 'W/"1"'
    events_before = OutboxEvent.objects.count()

    # when it writes with the stale version
    client = api(staff["admin"])
    response = (client.post if target == "action" else client.patch)(path, body, format="json", **headers)

    # then 409 stale_version with the current version and state, and nothing changed or was queued
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "stale_version"
    details = response.json()["details"]
    assert (details["current_version"], details["current"]["id"], details["current"]["version"]) == (2, str(obj.id), 2)
    assert details["history"] == []  # (the version was raised behind the audit trail's back here)
    obj.refresh_from_db()
    assert obj.version == 2 and OutboxEvent.objects.count() == events_before and enqueued == []


def test_the_current_version_is_accepted_by_body_or_if_match(api, staff):
    crate = CrateFactory(unit=staff["store"].unit)
    client = api(staff["store"])
    assert client.patch(f"/api/crates/{crate.id}/", {"location": "A", "version": 1}, format="json").json()["version"] == 2
    assert client.patch(f"/api/crates/{crate.id}/", {"location": "B"}, format="json", HTTP_IF_MATCH='"2"').json()["version"] == 3


def test_a_body_version_wins_over_if_match(api, staff):
    crate = CrateFactory(unit=staff["store"].unit)
    response = api(staff["store"]).patch(
        f"/api/crates/{crate.id}/", {"location": "A", "version": 1}, format="json", HTTP_IF_MATCH='"9"'
    )
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["patch", "delete"])
@pytest.mark.parametrize(
    "if_match",
    # words, Python's int-string limit (4,301 digits), beyond a PositiveIntegerField, 0, non-ASCII digits
    ["yesterday", "9" * 4301, '"' + "9" * 5000 + '"', str(2**31), "0", "\u0663"],
    ids=["words", "4301-digits", "5000-digits-quoted", "2^31", "zero", "arabic-digit"],
)
def test_a_garbage_if_match_is_400(api, staff, method, if_match):
    crate = CrateFactory(unit=staff["store"].unit)
    client = api(staff["store"])
    response = getattr(client, method)(f"/api/crates/{crate.id}/", {"location": "A"}, format="json", HTTP_IF_MATCH=if_match)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_if_match"
    assert Crate.objects.get(id=crate.id).version == 1


def test_delete_with_a_stale_if_match_is_409(api, staff):
    crate = CrateFactory(unit=staff["store"].unit, version=3)
    response = api(staff["store"]).delete(f"/api/crates/{crate.id}/", {"reason": "broken"}, format="json", HTTP_IF_MATCH='"2"')
    assert (response.status_code, response.json()["code"]) == (409, "stale_version")
    assert Crate.objects.filter(id=crate.id).exists()


# --- bad input --------------------------------------------------------------------------------


def test_missing_crates_is_400_with_field_details(api, staff):
    response = api(staff["requester"]).post("/api/withdrawal-requests/", {"reason": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert set(response.json()["details"]) == {"crates"}


def test_an_empty_crate_list_is_400(api, staff):
    response = api(staff["requester"]).post("/api/withdrawal-requests/", {"crates": []}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")


def test_an_unknown_crate_and_another_units_crate_get_the_same_answer(api, staff):
    client = api(staff["requester"])
    unknown = client.post("/api/withdrawal-requests/", {"crates": ["00000000-0000-4000-8000-000000000000"]}, format="json")
    foreign_crate = CrateFactory(unit=UnitFactory(code="foreign"))
    foreign = client.post("/api/withdrawal-requests/", {"crates": [str(foreign_crate.id)]}, format="json")
    assert unknown.status_code == foreign.status_code == 400
    assert unknown.json() == foreign.json() == {"code": "unknown_crate", "message": "Unknown crate in the request."}
    assert WithdrawalRequest.objects.count() == 0


def test_a_malformed_crate_id_is_400(api, staff):
    response = api(staff["requester"]).post("/api/withdrawal-requests/", {"crates": ["CR-1"]}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert "crates" in response.json()["details"]


@pytest.mark.parametrize("action", ["reject", "send-back"])
@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "  "}])
def test_reject_and_send_back_without_a_reason_are_400(api, staff, enqueued, action, body):
    request = make_request("withdrawal", staff["requester"])
    response = api(staff["approver"]).post(f"/api/withdrawal-requests/{request.id}/{action}/",
        signed(action, body), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "reason_required"
    assert enqueued == []


def test_a_transfer_to_its_own_unit_is_400(api, staff):
    crate = CrateFactory(unit=staff["requester"].unit)
    response = api(staff["requester"]).post(
        "/api/transfer-requests/", {"crates": [str(crate.id)], "destination_unit": str(staff["requester"].unit_id)}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (400, "destination_same_unit")
    assert TransferRequest.objects.count() == 0


def test_a_transfer_to_an_unknown_unit_is_400(api, staff):
    crate = CrateFactory(unit=staff["requester"].unit)
    response = api(staff["requester"]).post(
        "/api/transfer-requests/", {"crates": [str(crate.id)], "destination_unit": "00000000-0000-4000-8000-000000000000"},
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (400, "destination_required")


def test_malformed_json_is_400_parse_error(api, staff):
    response = api(staff["requester"]).generic(
        "POST", "/api/withdrawal-requests/", '{"crates": [', content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert response.json()["message"].startswith("JSON parse error")


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000, '{"crates": ' + "[" * 5000 + "]" * 5000 + "}", '{"reason": "\xff"}'.encode("latin-1"), b"\xff\xfe"],
    ids=["deep-array", "deep-crates", "latin-1", "not-utf-8"],
)
def test_deeply_nested_or_undecodable_json_is_400_parse_error(api, staff, body):
    response = api(staff["requester"]).generic("POST", "/api/withdrawal-requests/", body, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (400, "parse_error")


def test_a_body_over_the_size_limit_is_413_and_creates_nothing(api, staff, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = '{"crates": [], "reason": "' + "x" * 10_000 + '"}'
    response = api(staff["requester"]).generic("POST", "/api/withdrawal-requests/", body, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    assert not WithdrawalRequest.objects.exists()


def test_a_body_that_is_not_json_is_415(api, staff):
    response = api(staff["requester"]).generic(
        "POST", "/api/withdrawal-requests/", "crates=1", content_type="application/x-www-form-urlencoded"
    )
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")


def test_a_crate_in_an_open_request_is_409_crate_unavailable(api, staff):
    crate = CrateFactory(unit=staff["requester"].unit)
    make_request("destruction", staff["requester"], [crate])
    response = api(staff["requester"]).post("/api/withdrawal-requests/", {"crates": [str(crate.id)]}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "code": "crate_unavailable", "message": f"Already in an open request: {crate.crate_number}.",
        "details": {"crates": [crate.crate_number]},
    }


def test_deleting_a_requested_crate_is_409(api, staff):
    crate = CrateFactory(unit=staff["requester"].unit)
    make_request("withdrawal", staff["requester"], [crate])
    response = api(staff["store"]).delete(f"/api/crates/{crate.id}/", {"reason": "broken"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "crate_unavailable")


def test_an_unsupported_method_is_405_with_a_code(api, staff):
    response = api(staff["admin"]).put("/api/sendback-records/", {}, format="json")
    assert response.status_code == 405
    assert response.json() == {"code": "method_not_allowed", "message": 'Method "PUT" not allowed.'}


def test_an_unknown_page_is_404_not_found(api, staff):
    response = api(staff["admin"]).get("/api/crates/?page=9")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- Django's own error pages under /api/ ------------------------------------------------------


def test_an_unknown_api_url_is_a_json_404(api, staff):
    response = api(staff["admin"]).get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not found."}


def test_an_unknown_page_outside_the_api_stays_html():
    response = APIClient().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_unhandled_error_in_the_api_is_a_json_500_without_internals(api, staff, monkeypatch):
    def explode(user):
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr("backend.records.selectors.crates_visible_to", explode)
    client = api(staff["admin"])
    client.raise_request_exception = False
    response = client.get("/api/crates/")
    assert response.status_code == 500
    assert response.json() == {"code": "server_error", "message": "Internal server error."}
