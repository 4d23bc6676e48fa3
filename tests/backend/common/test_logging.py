"""Credentials never reach a log line: tokens, tickets and Bearer values are masked, nothing else is."""

from __future__ import annotations

import json
import logging

import pytest

from backend.common.logging import JsonFormatter, RedactCredentialsFilter, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiNDIifQ.c2lnbmF0dXJl-_x"


@pytest.mark.parametrize(
    "line,expected",
    [
        (f"GET /ws/updates/?token={JWT}&last_seq=4 101", "GET /ws/updates/?token=[redacted]&last_seq=4 101"),
        ("GET /ws/updates/?ticket=AbC-123_xyz HTTP/1.1", "GET /ws/updates/?ticket=[redacted] HTTP/1.1"),
        (f"/ws/updates/?last_seq=9&token={JWT}", "/ws/updates/?last_seq=9&token=[redacted]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
        (f"authorization: bearer {JWT} from 10.0.0.1", "authorization: bearer [redacted] from 10.0.0.1"),
        (f'{{"refresh": "x", "q": "access={JWT}"}}', '{"refresh": "x", "q": "access=[redacted]"}'),
        ("login password=hunter2 ok", "login password=[redacted] ok"),
        ("TOKEN=abc", "TOKEN=[redacted]"),
    ],
)
def test_credentials_are_masked(line, expected):
    assert redact(line) == expected
    assert JWT not in redact(line)


@pytest.mark.parametrize(
    "line",
    [
        "GET /api/crates/?status=in_storage&search=CR-2026-0001 200",
        "job 6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69 succeeded in 0.2s",
        "tokens issued: 3; tickets pending: 0",
        "the bearer of bad news",
        "",
    ],
)
def test_other_text_is_untouched(line):
    assert redact(line) == line


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("daphne.access", logging.INFO, __file__, 1, msg, args, None)


def test_the_filter_masks_the_formatted_message_and_keeps_the_record():
    record = _record("%s - %s", "127.0.0.1", f"GET /ws/updates/?token={JWT}")
    assert RedactCredentialsFilter().filter(record) is True
    assert record.getMessage() == "127.0.0.1 - GET /ws/updates/?token=[redacted]"


def test_the_filter_leaves_clean_records_alone():
    record = _record("%s items", 3)
    RedactCredentialsFilter().filter(record)
    assert (record.msg, record.args) == ("%s items", (3,))


def test_json_lines_are_masked_too_including_tracebacks():
    try:
        raise ValueError(f"bad ticket=SECRET123 in {JWT}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Bearer %s", (JWT,), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "Bearer [redacted]" and line["level"] == "ERROR"
    assert "SECRET123" not in line["exc"] and "ticket=[redacted]" in line["exc"]
