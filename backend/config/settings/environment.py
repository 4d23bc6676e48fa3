"""Where every setting comes from: the process environment, and a `.env` file at the project root
when present (never committed). The area modules of this package read their knobs through `env`."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parents[3]
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# The entry point that runs this process (backend/common/entrypoint.declare_process): "web",
# "worker", "relay", or empty (manage.py). Settings that differ by process read it here.
PROCESS = env("RECORDS_PROCESS", default="")
