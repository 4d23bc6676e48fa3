"""Every action the audit trail can record, and the word a person reads for it.

Each app that writes entries registers its actions here when it is ready (`records`: the request
and crate lifecycle, holds, reviews, reports, from backend/records/actions.py; `accounts`: access
changes and signatures, from backend/accounts/vocabulary.py), and `journal_write` refuses an entry
whose action is not registered: an action nobody can read back in words never enters the trail. The
console receives this table in its page (realtime/views.py) and has none of its own.

Plain Python (no Django import).
"""

from __future__ import annotations

from collections.abc import Mapping

_WORDS: dict[str, str] = {}


def actions_register(words: Mapping[str, str]) -> None:
    """Register audit actions and their words; an action registered twice must keep its word."""
    for action, word in words.items():
        if not action or not word:
            raise ValueError(f"an audit action needs a name and a word: {action!r}: {word!r}")
        if _WORDS.get(action, word) != word:
            raise ValueError(f"audit action {action!r} is {_WORDS[action]!r} already, not {word!r}")
        _WORDS[action] = word


def action_words() -> dict[str, str]:
    """{action: word} for every action the trail can record."""
    return dict(sorted(_WORDS.items()))


def action_known(action: str) -> bool:
    return action in _WORDS
