"""Logging helpers: credentials never reach a log line, and production logs are JSON lines."""

from __future__ import annotations

import json
import logging
import re

# token=..., ticket=..., access/refresh values, Authorization: Bearer ... (a credential is long: every
# token and ticket issued here is, while "the bearer of ..." in plain prose must stay readable)
_SECRET = re.compile(r"((?:token|ticket|access|refresh|password)=)[^&\s\"']+|(Bearer\s+)[\w\-.~+/]{16,}=*", re.I)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


class RedactCredentialsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            body["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(body)
