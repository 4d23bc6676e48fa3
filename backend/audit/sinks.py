"""Where each checkpoint goes outside the database: an append-only sink (AUDIT_CHECKPOINT_SINK).

- `file:///path/checkpoints.jsonl` (default, under var/): one JSON line a checkpoint, written with
  O_APPEND and fsync'd before the checkpoint's transaction commits.
- `syslog+tcp://host:port`, `syslog+udp://host:port`, `syslog:///dev/log`: one RFC 5424 message a
  checkpoint (MSGID `audit-checkpoint`, the JSON as its message) to a collector someone else runs.

Verify compares the database's checkpoints with the sink's copy: the file itself, or for syslog the
collector's archive (AUDIT_CHECKPOINT_SINK_COPY, any file whose lines carry the JSON). docs/audit.md
says which to use in production and why.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

MSGID = "audit-checkpoint"
# local0.notice: a facility operators route on their own, at a severity no filter drops.
PRIORITY = 16 * 8 + 5


class Sink:
    """Appends checkpoint documents somewhere the database owner cannot rewrite them."""

    def append(self, documents: list[dict]) -> None:
        raise NotImplementedError

    def copy_path(self) -> Path | None:
        """A readable copy of what was appended, for verify (None: none configured)."""
        return None


def encode(document: dict) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


class FileSink(Sink):
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, documents: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end whatever else holds the file open; fsync: on disk
        # before the database commits the same checkpoints.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            data = "".join(encode(document) + "\n" for document in documents).encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def copy_path(self) -> Path | None:
        return self.path


class SyslogSink(Sink):
    def __init__(self, transport: str, address: str | tuple[str, int], copy: Path | None) -> None:
        self.transport, self.address, self.copy = transport, address, copy

    def message(self, document: dict) -> bytes:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        host = socket.gethostname()[:255] or "-"
        return f"<{PRIORITY}>1 {stamp} {host} records {os.getpid()} {MSGID} - {encode(document)}".encode()

    def append(self, documents: list[dict]) -> None:
        messages = [self.message(document) for document in documents]
        if self.transport == "tcp":
            # Octet-counting framing (RFC 6587): the collector acknowledges nothing, but TCP tells us
            # the bytes left, and a refused connection fails the checkpoint instead of losing it.
            with socket.create_connection(self.address, timeout=5) as conn:
                conn.sendall(b"".join(f"{len(m)} ".encode() + m for m in messages))
        elif self.transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
                for message in messages:
                    conn.sendto(message, self.address)
        else:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as conn:
                conn.connect(self.address)
                for message in messages:
                    conn.send(message)

    def copy_path(self) -> Path | None:
        return self.copy


def sink_from_url(url: str, copy: str = "") -> Sink | None:
    if not url or url == "none":
        return None
    parts = urlsplit(url)
    copy_path = Path(copy) if copy else None
    if parts.scheme == "file":
        return FileSink(Path(parts.path))
    if parts.scheme in ("syslog+tcp", "syslog+udp"):
        return SyslogSink(parts.scheme.removeprefix("syslog+"), (parts.hostname or "127.0.0.1", parts.port or 514), copy_path)
    if parts.scheme == "syslog":
        return SyslogSink("unix", parts.path or "/dev/log", copy_path)
    raise ValueError(f"AUDIT_CHECKPOINT_SINK: unknown sink {url!r} (file://, syslog+tcp://, syslog+udp://, syslog://)")


def sink() -> Sink | None:
    return sink_from_url(settings.AUDIT_CHECKPOINT_SINK, settings.AUDIT_CHECKPOINT_SINK_COPY)


def read_copy(path: Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, checkpoint document or None for a line that is not one) of a sink's copy:
    JSON lines, or syslog lines with the JSON after the header."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            start = line.find("{")
            if start < 0:
                if line.strip():
                    yield number, None
                continue
            try:
                document = json.loads(line[start:])
            except ValueError:
                yield number, None
                continue
            yield number, document if isinstance(document, dict) else None
