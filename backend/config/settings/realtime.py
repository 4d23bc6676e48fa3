"""The realtime tier: WebSocket limits, resume, presence, batching and slow clients."""

from __future__ import annotations

from .environment import env

# --- Realtime -------------------------------------------------------------------------------
WS_TICKET_TTL_SECONDS = env.int("WS_TICKET_TTL_SECONDS", default=30)
# One user's WebSockets across every Daphne process; beyond it a connection is closed with 4029.
WS_MAX_CONNECTIONS_PER_USER = env.int("WS_MAX_CONNECTIONS_PER_USER", default=20)
# Client messages per connection (ping, ...): a token bucket; beyond it they are dropped with an
# `error` rate_limited (at most one a second).
WS_CLIENT_MESSAGES_PER_SECOND = env.float("WS_CLIENT_MESSAGES_PER_SECOND", default=20.0)
WS_CLIENT_MESSAGES_BURST = env.int("WS_CLIENT_MESSAGES_BURST", default=40)
# A `subscribe {"mine": true}` reads the user's requests (four bounded queries) at most once in this
# many seconds per connection; a subscribe within it reuses the ids resolved last (grown live).
WS_MINE_REFRESH_SECONDS = env.float("WS_MINE_REFRESH_SECONDS", default=30.0)
# Browser origins allowed on /ws/updates/. Empty: any scheme and port of an ALLOWED_HOSTS name (the
# seed's behaviour: a dev SPA on :3000 talks to Daphne on :8000). Set exact origins
# (`https://records.example.com`) to pin scheme and port too.
WS_ALLOWED_ORIGINS = env.list("WS_ALLOWED_ORIGINS", default=[])
# How far back `last_seq` can resume; older gaps get `resync_required` (refetch over REST).
REALTIME_REPLAY_LIMIT = env.int("REALTIME_REPLAY_LIMIT", default=10_000)
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)
# A connection is re-validated (active? same unit?) this often, so 4003 never depends on
# a single lost message.
REALTIME_REVALIDATE_SECONDS = env.float("REALTIME_REVALIDATE_SECONDS", default=2.0)
# How often each Daphne process reports its numbers for /metrics and unregisters connections it
# finds closed (the snapshot expires after 5 of these, so a dead process drops out).
REALTIME_REPORT_SECONDS = env.float("REALTIME_REPORT_SECONDS", default=2.0)
# A Daphne process logs a warning (logger realtime.hub) whenever its event loop could not run for
# longer than this (every update to its clients waits that long), naming the periodic pass that ran
# longest meanwhile; and each periodic pass over its connections that takes longer. 0: off.
REALTIME_STALL_WARN_MS = env.int("REALTIME_STALL_WARN_MS", default=50)
# The request -> client trace (backend/common/trace.py): a hub logs one line, split into stages,
# for each change it handed over more than this after its API request arrived (0: never).
REQUEST_TRACE_WARN_MS = env.float("REQUEST_TRACE_WARN_MS", default=80)
# Coalescing window for `batch=1` clients.
REALTIME_BATCH_WINDOW_MS = env.int("REALTIME_BATCH_WINDOW_MS", default=50)
# A connection whose socket stays full (the client stopped reading) this long is closed with 4008;
# its next resume with `last_seq` fills whatever it missed.
REALTIME_SLOW_CLIENT_SECONDS = env.float("REALTIME_SLOW_CLIENT_SECONDS", default=10.0)
# Bytes a connection may have waiting for a client that does not read, beyond Twisted's own 64 KiB
# buffer: past it the connection is closed with 4008 at once (a resume replay waits for the client
# to drain instead of writing more).
REALTIME_CLIENT_BUFFER_BYTES = env.int("REALTIME_CLIENT_BUFFER_BYTES", default=1_048_576)
# Presence (`presence=1`, docs/realtime.md): at most one presence_update per user per this many ms
# for the whole unit (the latest state goes out when it has passed), and how often each Daphne
# process sweeps the presence of its units (a killed process's users leave within its heartbeat's
# expiry, 5 x REALTIME_REPORT_SECONDS, plus this).
REALTIME_PRESENCE_INTERVAL_MS = env.int("REALTIME_PRESENCE_INTERVAL_MS", default=1000)
REALTIME_PRESENCE_SWEEP_SECONDS = env.float("REALTIME_PRESENCE_SWEEP_SECONDS", default=5.0)

