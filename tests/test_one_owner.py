"""Rules written once: the channel-layer message types live in backend/events/groups.py and the
action spellings (and signature meanings) in backend/records/actions.py; no other module of the
product spells them. A drifted copy of the action vocabulary is how a spelling once skipped a
signature check, so this reads every module's string constants (the AST, not a grep: comments and
docstrings may name them)."""

from __future__ import annotations

import ast
from pathlib import Path

from backend.events.groups import MESSAGE_TYPES
from backend.records.actions import ACTIONS

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("backend", "realtime", "workers")
# The actions whose name and URL differ: the two-word ones, where copies of the vocabulary drifted
# (one-word actions, `approve`, are also ordinary words elsewhere).
ACTION_SPELLINGS = {s for a in ACTIONS.values() if a.name != a.path for s in (a.name, a.path)}


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def _spelled(words: set[str], owner: str) -> dict[str, set[str]]:
    found = {}
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            if relative == owner or "/migrations/" in relative:
                continue
            hits = _string_constants(path) & words
            if hits:
                found[relative] = hits
    return found


def test_channel_layer_message_types_are_spelled_only_next_to_the_group_names():
    assert set(MESSAGE_TYPES) >= {"unit.events", "job.update", "user.close", "user.notifications"}
    assert _spelled(set(MESSAGE_TYPES), "backend/events/groups.py") == {}


def test_the_multi_word_action_spellings_are_spelled_only_in_the_vocabulary_table():
    assert ACTION_SPELLINGS == {"send_back", "send-back"}
    assert _spelled(ACTION_SPELLINGS, "backend/records/actions.py") == {}


MAX_MODULE_LINES = 450


def test_no_module_of_the_product_is_over_450_lines():
    # given every module of the backend, the realtime tier and the workers (migrations are generated)
    root = Path(__file__).resolve().parents[1]
    sizes = {
        str(path.relative_to(root)): len(path.read_text().splitlines())
        for folder in ("backend", "realtime", "workers")
        for path in (root / folder).rglob("*.py")
        if "migrations" not in path.parts
    }
    # then each fits in a head: a longer one is split along its concerns (docs/architecture.md)
    assert len(sizes) > 100, "no modules found: the check is broken"
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}
