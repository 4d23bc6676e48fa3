"""The live console at `/`: a plain page (no build step) on the public API and the reference JS
client (static/realtime/updates-client.js). It keeps no server-side session: the browser signs in
against /api/auth/token/ and holds its tokens in sessionStorage, like any SPA would."""

from __future__ import annotations

from django.views.generic import TemplateView

from backend.audit.vocabulary import action_words
from backend.records.actions import vocabulary


def console_vocabulary() -> dict:
    """What the console says of actions, from the server's own tables: every spelling of each
    request action and signed act (backend/records/actions.py) and the word of every action the audit
    trail can record (backend/audit/vocabulary.py). The page carries it as JSON (json_script: data,
    not a script, so the CSP stands); the console's scripts have no table of their own."""
    return {**vocabulary(), "entries": action_words()}


class ConsoleView(TemplateView):
    template_name = "realtime/console.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "vocabulary": console_vocabulary()}

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        # Everything the page runs is a same-origin file: no inline script or style, no third party.
        host = request.get_host()
        response["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' ws://{host} wss://{host}; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        response["Cache-Control"] = "no-store"
        return response
