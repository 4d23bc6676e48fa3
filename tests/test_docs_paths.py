"""Every path the docs name exists: a file or folder (`backend/audit/verify.py`, `tests/compose/`), a
module with one of its names (`backend/events/outbox.outbox_publish`), or a test with its function
(`tests/x/test_y.py::test_z`). Docs that point at code which moved or was renamed fail here, not in
a newcomer's hands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TOP = ("backend", "realtime", "workers", "tests", "bench", "compose", "scripts", "requirements", "clients", "docs")
# Files a user makes (the docs say how), never in the repository.
MADE_BY_USERS = {"compose/.env"}
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(TOP)})/[\w./*<>{{}}-]*[\w/*])(?:::(\w+))?")


def named_paths(text: str):
    for match in PATH.finditer(text):
        path, test = match.group(1), match.group(2)
        if "<" in path or "{" in path or path in MADE_BY_USERS:  # a pattern (`backend/<app>/api.py`), not a path
            continue
        yield path, test


def exists(path: str, test: str | None) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    target = ROOT / path
    if target.exists():
        return test is None or re.search(rf"def {test}\b", target.read_text()) is not None
    # `package/module.name`: the module, then the name defined in it
    module, _, name = path.rpartition(".")
    source = ROOT / f"{module}.py"
    if module and source.exists():
        return re.search(rf"(def|class) {re.escape(name)}\b|^{re.escape(name)}\b", source.read_text(), re.M) is not None
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_path_a_doc_names_exists(doc):
    missing = sorted({f"{path}::{test}" if test else path for path, test in named_paths(doc.read_text())
                      if not exists(path, test)})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_check_finds_paths_and_tells_a_missing_one():
    text = "see `backend/events/outbox.outbox_publish`, tests/test_docs_paths.py and `realtime/gone.py`"
    found = dict(named_paths(text))
    assert set(found) == {"backend/events/outbox.outbox_publish", "tests/test_docs_paths.py", "realtime/gone.py"}
    assert exists("backend/events/outbox.outbox_publish", None)
    assert not exists("realtime/gone.py", None)
    assert not exists("tests/test_docs_paths.py", "test_that_is_not_there")
