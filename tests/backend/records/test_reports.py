"""Printable reports (21 CFR Part 11 §11.10(b), §11.50(b)), read as a person reads them: the PDF's
text extracted with poppler's `pdftotext` (names, meanings, times in UTC and the unit's zone,
history old → new with who and why, the chain check) and its first page rendered with `pdftoppm`
(not blank). Unit-scoped like the record, and printing is itself audited."""

from __future__ import annotations

import shutil
import subprocess
import zoneinfo
from pathlib import Path

import pytest

from backend.accounts.models import Role, Unit
from backend.audit.models import AuditEntry
from backend.records import services
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.signing import sign, sign_act, transition_now

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not shutil.which("pdftotext") or not shutil.which("pdftoppm"),
                       reason="poppler-utils (scripts/ensure-deploy-tools installs it)"),
]


def pdf_text(content: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(content)
    result = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, timeout=60)
    return result.stdout.decode()


def first_page_ink(content: bytes, tmp_path: Path) -> float:
    """The share of page 1's pixels that are not white, rendered at 50 dpi by pdftoppm (grayscale PGM)."""
    path = tmp_path / "report.pdf"
    path.write_bytes(content)
    subprocess.run(["pdftoppm", "-gray", "-r", "50", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")],
                   check=True, timeout=60)
    (image,) = tmp_path.glob("page*.pgm")
    data = image.read_bytes()
    # P5 header: magic, width height, maxval, each followed by whitespace; then the pixels
    parts = data.split(maxsplit=4)
    width, height = int(parts[1]), int(parts[2])
    pixels = parts[4][-width * height:]
    return sum(1 for p in pixels if p < 200) / len(pixels)


@pytest.fixture
def unit():
    unit = UnitFactory(code="zrh")
    Unit.objects.filter(id=unit.id).update(timezone="Europe/Zurich")
    unit.refresh_from_db()
    return unit, {
        "requester": UserFactory(unit=unit, role=Role.REQUESTER, first_name="Rita", last_name="Requester"),
        "approver": UserFactory(unit=unit, role=Role.APPROVER, first_name="Ada", last_name="Lovelace"),
        "store": UserFactory(unit=unit, role=Role.STORE),
        "qa": UserFactory(unit=unit, role=Role.QA, first_name="Quinn", last_name="Quality"),
    }


def _local(moment, zone="Europe/Zurich") -> str:
    return moment.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def test_a_request_report_shows_the_record_its_signature_its_history_and_the_chain(api, unit, tmp_path):
    unit, people = unit
    request = make_request("destruction", people["requester"])
    services.request_update(entity="destruction", actor=people["requester"], request_id=request.id,
                            expected_version=1, reason="Expired batch records 2014", change_reason="clearer reason")
    transition_now(entity="destruction", action="approve", actor=people["approver"], request_id=request.id,
                   signature_id=sign(people["approver"], "destruction", "approve"))
    signature_entry = AuditEntry.objects.get(record_id=request.id, action="approved")

    answer = api(people["qa"]).get(f"/api/destruction-requests/{request.id}/report.pdf")

    assert answer.status_code == 200, answer.content[:300]
    assert answer["Content-Type"] == "application/pdf"
    content = b"".join(answer.streaming_content)
    assert content.startswith(b"%PDF")
    text = pdf_text(content, tmp_path)
    flat = " ".join(text.split())
    # the record as it is now
    assert request.request_number in flat and "approved" in flat and "Expired batch records 2014" in flat
    # the signature manifested: printed name, meaning, date and time (UTC and the unit's zone), unchanged since
    signed_at = signature_entry.signature.signed_at
    assert "Ada Lovelace" in flat and "meaning: approved" in flat
    assert signed_at.strftime("%Y-%m-%d %H:%M:%S") + " UTC" in flat
    assert _local(signed_at) in flat and "Europe/Zurich" in flat
    assert "unchanged since signing" in flat
    # the history: old → new, who, when, why
    assert "reason: test → Expired batch records 2014" in flat
    assert "status: pending → approved" in flat
    assert "Why: clearer reason" in flat and "Rita Requester" in flat
    # the chain position and the verification at printing; page numbers and who printed it
    printed = AuditEntry.objects.get(record_id=request.id, action="printed")
    assert f"audit entry #{printed.position}" in flat and "Record history check: PASSED" in flat
    assert "Page 1 of 1" in flat and "by Quinn Quality (" in flat
    assert printed.actor_id == people["qa"].id and printed.unit_id == unit.id
    # and page 1 is not blank
    assert first_page_ink(content, tmp_path) > 0.005


def test_a_signature_the_record_changed_after_is_said_to_be(api, unit, tmp_path):
    unit, people = unit
    request = make_request("withdrawal", people["requester"])
    transition_now(entity="withdrawal", action="send_back", actor=people["approver"], request_id=request.id,
                   reason="wrong crate", signature_id=sign(people["approver"], "withdrawal", "send_back"))
    services.request_update(entity="withdrawal", actor=people["requester"], request_id=request.id,
                            expected_version=2, reason="right crate now", change_reason="fixed")

    answer = api(people["approver"]).get(f"/api/withdrawal-requests/{request.id}/report.pdf")

    flat = " ".join(pdf_text(b"".join(answer.streaming_content), tmp_path).split())
    assert "meaning: returned" in flat and "CHANGED after signing" in flat


def test_a_crate_report_shows_its_hold_signatures_and_history(api, unit, tmp_path):
    unit, people = unit
    crate = services.crate_create(actor=people["store"], location="Aisle 4")
    services.crate_relocate(actor=people["store"], crate_id=crate.id, location="Vault 9", reason="humidity")
    from backend.records.services.holds import hold_place

    hold_place(actor=people["qa"], crate_ids=[crate.id], reason="Case 26-114", signature=sign_act(people["qa"], "hold"))

    answer = api(people["store"]).get(f"/api/crates/{crate.id}/report.pdf")

    assert answer.status_code == 200
    flat = " ".join(pdf_text(b"".join(answer.streaming_content), tmp_path).split())
    assert crate.crate_number in flat and "On legal hold yes" in flat
    assert "location: Aisle 4 → Vault 9" in flat and "Why: humidity" in flat
    assert "Quinn Quality" in flat and "meaning: hold" in flat and "on_hold: no → yes" in flat


def test_reports_are_unit_scoped_and_need_a_user(api, unit):
    unit, people = unit
    request = make_request("withdrawal", people["requester"])
    crate = CrateFactory(unit=unit)
    stranger = api(UserFactory(unit=UnitFactory(code="other"), role=Role.QA))

    assert stranger.get(f"/api/withdrawal-requests/{request.id}/report.pdf").status_code == 404
    assert stranger.get(f"/api/crates/{crate.id}/report.pdf").status_code == 404
    assert stranger.get(f"/api/destruction-requests/{request.id}/report.pdf").status_code == 404  # wrong kind
    assert api().get(f"/api/crates/{crate.id}/report.pdf").status_code == 401
    refused = stranger.get(f"/api/crates/{crate.id}/report.pdf", HTTP_ACCEPT="application/pdf")
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    assert not AuditEntry.objects.filter(action="printed").exists()


def test_a_long_history_spans_numbered_pages(api, unit, tmp_path, settings):
    unit, people = unit
    crate = services.crate_create(actor=people["store"], location="L0")
    for i in range(1, 120):
        services.crate_update(actor=people["store"], crate_id=crate.id, expected_version=i, location=f"L{i}",
                              change_reason=f"move {i}")

    answer = api(people["store"]).get(f"/api/crates/{crate.id}/report.pdf")

    text = pdf_text(b"".join(answer.streaming_content), tmp_path)
    pages = text.split("\f")
    pages = [p for p in pages if p.strip()]
    assert len(pages) > 3
    assert f"Page {len(pages)} of {len(pages)}" in " ".join(pages[-1].split())
    assert "location: L118 → L119" in " ".join(text.split()) and "Why: move 119" in " ".join(text.split())
