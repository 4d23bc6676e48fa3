"""The OpenAPI document is generated without a single warning, validates, and is browsable offline."""

from __future__ import annotations

import re
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    # given a clean slate (the generator keeps its warnings process-wide)
    GENERATOR_STATS.reset()
    out, err = StringIO(), StringIO()

    # when the schema is generated as CI does
    try:
        call_command(
            "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"), stdout=out, stderr=err
        )
    except Exception as exc:  # noqa: BLE001 - show every warning the generator printed
        pytest.fail(f"{exc}\n{err.getvalue()}")

    # then nothing was reported, and every contract path is in it with Bearer auth
    assert "Warning" not in err.getvalue() and "Error" not in err.getvalue(), err.getvalue()
    schema = yaml.safe_load((tmp_path / "schema.yml").read_text())
    paths = set(schema["paths"])
    assert {
        "/api/auth/token/", "/api/auth/token/refresh/", "/api/auth/ws-ticket/", "/api/me/",
        "/api/crates/", "/api/crates/{id}/", "/api/crates/{id}/relocate/",
        "/api/sendback-records/", "/api/sendback-records/{id}/", "/api/jobs/{id}/",
    } <= paths
    for resource in ("withdrawal-requests", "destruction-requests", "transfer-requests"):
        for suffix in ("", "{id}/", "{id}/approve/", "{id}/reject/", "{id}/send-back/", "{id}/resubmit/"):
            assert f"/api/{resource}/{suffix}" in paths
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    # path ids are typed as UUIDs, not guessed strings
    crate_id = next(p for p in schema["paths"]["/api/crates/{id}/"]["get"]["parameters"] if p["name"] == "id")
    assert crate_id["schema"] == {"type": "string", "format": "uuid"}


def test_the_schema_endpoint_answers():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["info"]["title"] == "Records realtime API"


def test_the_docs_page_is_served_offline():
    # when the Swagger UI page is fetched
    client = APIClient()
    response = client.get("/api/docs/")

    # then it loads its assets from this server (the sidecar), never from a CDN
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html[:500]
    assert all(a.startswith("/static/drf_spectacular_sidecar/") for a in assets), assets
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    # and every one of them is actually there
    for asset in assets:
        fetched = client.get(asset)
        assert fetched.status_code == 200, asset


@pytest.fixture
def api_docs(settings):
    """Set API_DOCS and rebuild the URLconf with it (the URLs are built once, at import)."""
    import importlib

    from django.urls import clear_url_caches

    import backend.config.urls

    def configure(value: str) -> None:
        settings.API_DOCS = value
        importlib.reload(backend.config.urls)
        clear_url_caches()

    yield configure
    settings.API_DOCS = "public"
    importlib.reload(backend.config.urls)
    clear_url_caches()


def test_staff_only_docs_answer_staff_and_no_one_else(api_docs):
    from tests.support.factories import UserFactory

    # given docs for staff only (production's default)
    api_docs("staff")
    client = APIClient()

    # then an anonymous client and a signed-in unit user are refused
    assert client.get("/api/schema/").status_code == 401
    assert client.get("/api/docs/").status_code == 401
    client.force_authenticate(UserFactory())
    assert client.get("/api/schema/").status_code == 403
    # and staff get both (the admin's session works too, so the page opens from the admin)
    staff = UserFactory(is_staff=True)
    client.force_authenticate(staff)
    assert client.get("/api/schema/").status_code == 200
    session = APIClient()
    session.force_login(staff)
    assert session.get("/api/docs/").status_code == 200


def test_docs_turned_off_are_not_there(api_docs):
    api_docs("off")
    client = APIClient()

    assert client.get("/api/schema/").status_code == 404
    assert client.get("/api/docs/").status_code == 404


def test_an_unknown_api_docs_value_is_refused(api_docs):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="API_DOCS must be public, staff or off, not 'yes'"):
        api_docs("yes")
