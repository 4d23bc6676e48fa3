"""The domain reads the realtime tier makes, each run on the realtime thread pool (realtime/db.py),
never on the event loop."""

from __future__ import annotations

from backend.accounts import selectors as accounts
from backend.events import selectors as events

from .db import realtime_db

unit_current_seq = realtime_db(events.unit_current_seq)
units_current_seq = realtime_db(events.units_current_seq)
outbox_frames = realtime_db(events.outbox_frames)
users_access = realtime_db(accounts.users_access)
user_for_socket = realtime_db(accounts.user_for_socket)
