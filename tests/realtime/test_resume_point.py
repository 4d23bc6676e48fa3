"""The resume rules (realtime/resuming.resume_point), one by one: continue after `last_seq`, or the
reason to resync instead. The live behaviour is in test_resume.py and test_epochs.py."""

from __future__ import annotations

import pytest

from realtime.resuming import resume_point


@pytest.mark.parametrize(
    ("requested", "epoch", "expected"),
    [
        (None, None, (10, None)),  # no resume: live from the current seq
        ("7", None, (7, None)),  # a seed client: no epoch, only the seq checked
        ("7", "e1", (7, None)),  # the same epoch: replay after 7
        ("7", "e0", (10, "epoch_changed")),  # another epoch: refetch, whatever the seq
        ("12", "e0", (10, "epoch_changed")),  # the epoch is checked first
        ("12", "e1", (10, "last_seq_ahead")),
        ("12", None, (10, "last_seq_ahead")),
        ("-1", "e1", (10, "invalid_last_seq")),
        ("x", None, (10, "invalid_last_seq")),
    ],
)
def test_resume_point(requested, epoch, expected):
    assert resume_point(requested, epoch, 10, "e1") == expected


def test_a_gap_beyond_the_replay_limit_is_history_limit(settings):
    settings.REALTIME_REPLAY_LIMIT = 5
    assert resume_point("4", "e1", 10, "e1") == (10, "history_limit")
    assert resume_point("5", "e1", 10, "e1") == (5, None)


def test_a_stream_without_an_epoch_yet_accepts_any(settings):
    # a unit whose counter does not exist yet has no epoch: nothing to compare
    assert resume_point("0", "e1", 0, "") == (0, None)
