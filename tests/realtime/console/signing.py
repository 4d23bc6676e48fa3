"""Signing a decision in the console as a decider does: the signing dialog (`sign-dialog`) opened by
Approve / Reject / Send back or by Run on a bulk decision, with the user's password (the factories'
PASSWORD) and, where the action takes one, a reason."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.support.factories import PASSWORD


def sign_in_dialog(page, *, password: str = PASSWORD, reason: str | None = None, title: str | None = None) -> None:
    """Sign in the open signing dialog and wait for it to close (the decision was sent)."""
    dialog = page.get_by_test_id("sign-dialog")
    expect(dialog).to_be_visible()
    if title is not None:
        expect(page.get_by_test_id("sign-title")).to_have_text(title)
    if reason is not None:
        page.get_by_test_id("sign-reason").fill(reason)
    page.get_by_test_id("sign-password").fill(password)
    page.get_by_test_id("sign-confirm").click()
    expect(dialog).to_be_hidden()
