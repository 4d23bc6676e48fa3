"""Channel-layer group names: defined here and nowhere else."""

from __future__ import annotations

import uuid


def unit_group_name(unit_id: uuid.UUID | str) -> str:
    """Every change a unit's clients may see is sent here (as in the seed: `unit_{unit_id}`)."""
    return f"unit_{unit_id}"


def user_group_name(user_id: uuid.UUID | str) -> str:
    """Messages for one user's connections: job progress, and the order to close (4003)."""
    return f"user_{user_id}"
