"""Third-party internals this project replaces live in one module per library, each naming the
library (`LIBRARY`), the exact version its replacements were copied from and checked against
(`WRITTEN_AGAINST`), and the problem's state upstream (`UPSTREAM`): realtime/patches/daphne.py,
realtime/patches/autobahn.py, backend/jobs/broker.py (kombu),
backend/accounts/simplejwt_stamp.py. tests/test_replaced_internals.py fails
on any other installed version, and each module calls `check_version` when it installs itself, so a
process started on another version says so in its log: an upgrade is a reading of the new upstream
code, never a surprise. docs/architecture.md, "Replaced internals", lists them.
"""

from __future__ import annotations

import logging
from importlib import metadata

logger = logging.getLogger(__name__)


def check_version(library: str, written_against: str) -> bool:
    """Whether the installed `library` is the version a patch module was written against (a
    warning when it is not: the patch may no longer match what it replaces)."""
    installed = metadata.version(library)
    if installed != written_against:
        logger.warning("%s is %s, but its replaced internals were written against %s: re-read them",
                       library, installed, written_against)
    return installed == written_against
