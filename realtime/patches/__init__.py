"""The Daphne and autobahn internals the realtime tier replaces, one module per library; what each
module declares and how an upgrade is caught: backend/common/upstream.py."""
