"""The production sink against a real syslog server: rsyslog (Debian's, installed by `make test` with
the deploy tools) receives each checkpoint over TCP and UDP and archives it with its own omfile; verify
reads that archive as the sink's copy, and notices when a line of it goes missing."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backend.audit.checkpoints import checkpoints_write
from backend.audit.selectors import audit_verify
from backend.records import services
from bench.processes import free_port
from tests.support.factories import UnitFactory, unit_staff

pytestmark = pytest.mark.django_db
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


@pytest.fixture
def rsyslog(tmp_path):
    """A real rsyslogd on this host's loopback, archiving what it receives to one file."""
    tcp, udp, archive = free_port(), free_port(), tmp_path / "archive.log"
    config = tmp_path / "rsyslog.conf"
    config.write_text(
        f'global(workDirectory="{tmp_path}")\n'
        'module(load="imtcp")\nmodule(load="imudp")\n'
        f'input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="archive")\n'
        f'input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="archive")\n'
        f'ruleset(name="archive") {{ action(type="omfile" file="{archive}") }}\n'
    )
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(config), "-i", str(tmp_path / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not (tmp_path / "rsyslogd.pid").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(0.2)  # (the inputs listen once the pid file is written and the modules are up)
    yield {"tcp": tcp, "udp": udp, "archive": archive}
    proc.terminate()
    proc.wait(10)


def _archived(archive: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = archive.read_text().splitlines() if archive.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"rsyslog archived {archive.read_text() if archive.exists() else 'nothing'}")


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rsyslog_archives_every_checkpoint_and_verify_compares_with_its_archive(rsyslog, transport, settings):
    # given two units with entries, and the sink pointed at a real rsyslog
    for code in ("north", "south"):
        services.crate_create(actor=unit_staff(UnitFactory(code=code))["store"])
    settings.AUDIT_CHECKPOINT_SINK = f"syslog+{transport}://127.0.0.1:{rsyslog[transport]}"
    settings.AUDIT_CHECKPOINT_SINK_COPY = str(rsyslog["archive"])

    # when the checkpoints are written
    written = checkpoints_write()

    # then rsyslog archived one line per checkpoint, carrying its signature, and verify compares them
    lines = _archived(rsyslog["archive"], len(written))
    assert len(written) == 2 and all(any(c.signature in line for line in lines) for c in written)
    result = audit_verify()
    assert result.ok and result.sink == "compared", result.first_bad
    # and an archive that lost a line is reported
    rsyslog["archive"].write_text(lines[0] + "\n")
    assert audit_verify().first_bad["rule"] == "sink_mismatch"
