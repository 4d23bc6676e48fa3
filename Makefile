# Two commands a newcomer needs:  `make up`  (the whole system, locally)  and  `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Every entry point needs an explicit settings module (a deployment never falls back to these
# development settings); make runs everything with the development one unless told otherwise,
# and the tests with theirs (--ds: pytest-django would otherwise take this variable over pyproject).
export DJANGO_SETTINGS_MODULE ?= backend.config.settings.base

.PHONY: help up test smoke venv redis browser-deps node-deps kit-deps kit kit-types deploy-tools lock lint bench bench-soak clean

help:
	@echo "make up     install, migrate, seed demo data and run web+ws, worker, beat and Flower"
	@echo "make test   install and run the whole test suite (unit, integration, browser)"
	@echo "make bench  run the benchmarks: realtime, audit, signing, the soak, the request tail (see docs/performance.md)"
	@echo "make bench-soak  the soak alone: 100,000 clients connect and close, the Daphne's memory and stalls"
	@echo "make lock   re-resolve requirements/*.txt from requirements/*.in"
	@echo "make kit    build the typed client kit (clients/js) and the console's bundle from it"
	@echo "make kit-types  regenerate the kit's types from the server (commit the result)"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is needed (python3.11, 3.12 or 3.13 on PATH)." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.synced: $(BIN)/python requirements/dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements/dev.txt
	@touch $@

venv: $(VENV)/.synced

redis:
	@scripts/ensure-redis

up: venv redis kit
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "  App + API:   http://127.0.0.1:8000/        (API docs: http://127.0.0.1:8000/api/docs/)"
	@echo "  WebSocket:   ws://127.0.0.1:8000/ws/updates/?token=<access>"
	@echo "  Flower:      http://127.0.0.1:5555/        (user:password from FLOWER_BASIC_AUTH, default admin:flower-pass-2026)"
	@echo "  Admin:       http://127.0.0.1:8000/admin/"
	@echo
	FLOWER_BASIC_AUTH="$${FLOWER_BASIC_AUTH:-admin:flower-pass-2026}" $(BIN)/honcho start -f Procfile

browser-deps:
	@scripts/ensure-browser

node-deps:
	@scripts/ensure-node

# The typed client kit, @records/client (clients/js, docs/client.md). `npm ci` from the committed
# lockfile, again only when the lockfile changed (--prefer-offline: npm's cache first, so a re-run
# needs no network). `make kit` builds the package (clients/js/dist) and the console's bundle
# (realtime/static/realtime/kit/records-client.js, committed: a deployment needs no Node); `make test`
# checks that the committed bundle and generated types are what the sources and the server give now.
KIT := clients/js
$(KIT)/node_modules/.ci-done: $(KIT)/package-lock.json $(KIT)/package.json
	cd $(KIT) && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	@touch $@

kit-deps: node-deps $(KIT)/node_modules/.ci-done

kit: kit-deps
	cd $(KIT) && npm run build

kit-types: venv kit-deps
	cd $(KIT) && PYTHON=$(CURDIR)/$(BIN)/python npm run generate

# tests/compose check compose/ with Debian's docker-compose and nginx (no Docker engine needed).
deploy-tools:
	@scripts/ensure-deploy-tools

# Two xdist workers, a test file each at a time: most integration tests wait on processes and
# sockets, so two run side by side on two cores; each worker has its own test database and Redis
# databases (backend/config/settings/test.py).
TEST_WORKERS ?= 2
# The record layer's rules (audit entries, append-only triggers, the hash chain, every service and
# job kind journaled) are then run once more on SQLite, the zero-setup default, whatever DATABASE_URL
# the main run used.
SQLITE_SUITE := tests/backend/audit tests/backend/records/test_services.py tests/backend/records/test_transitions.py
test: venv redis browser-deps node-deps kit-deps deploy-tools
	$(BIN)/lint-imports
	$(BIN)/pytest --ds=backend.config.settings.test -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	DATABASE_URL=sqlite:///$(CURDIR)/var/test-sqlite.sqlite3 $(BIN)/pytest --ds=backend.config.settings.test -q $(SQLITE_SUITE) $(PYTEST_ARGS)

# What a newcomer gets with no configuration: a fresh SQLite file migrated and seeded as `make up`
# does, then the stack (Daphne + worker) answering end to end on SQLite.
smoke: venv redis
	rm -f var/smoke.sqlite3*
	DATABASE_URL=sqlite:///$(CURDIR)/var/smoke.sqlite3 $(BIN)/python manage.py migrate --noinput -v 0
	DATABASE_URL=sqlite:///$(CURDIR)/var/smoke.sqlite3 $(BIN)/python manage.py seed_demo
	env -u DATABASE_URL $(BIN)/pytest --ds=backend.config.settings.test -m smoke $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

lock: venv
	$(BIN)/uv pip compile -q --python-version 3.11 requirements/base.in -o requirements/base.txt
	$(BIN)/uv pip compile -q --python-version 3.11 requirements/dev.in -o requirements/dev.txt
	$(BIN)/uv pip compile -q --python-version 3.11 requirements/prod.in -o requirements/prod.txt

# The realtime benchmark, then the audit trail's reads at AUDIT_BENCH_ENTRIES entries (seeding a
# million takes several minutes; `make bench AUDIT_BENCH_ENTRIES=50000` for a quick look), then a
# burst of 50 signatures against plain API reads (issue 30; its own database and a private
# redis-server of its own; SIGNING_ARGS="--redis-url redis://127.0.0.1:6386" for a server you run,
# whose databases 0-2 are flushed).
AUDIT_BENCH_ENTRIES ?= 1000000
SIGNING_ARGS ?=
# Then clients that come and go (issue 34, bench/soak.py): SOAK_ARGS (default 100,000 connect/close
# cycles in rounds of 1,000) against one Daphne run as the Procfile's web line, on a private
# redis-server of its own and records_bench_soak (dropped and created); --strict fails the make unless
# at most 0.5 KB is kept per cycle after the first round and the RSS is flat over the last half.
SOAK_ARGS ?= --cycles 100000
# Last, the request -> client tail (bench/tail.py): 150 single relocations to 999 clients on the whole
# Procfile stack, on SQLite (the zero-setup default) and on PostgreSQL (skipped, said so, if none
# answers; records_bench_tail is dropped and created), with the per-stage trace; it prints the tail
# ratio (p99 / p50) and fails the make on a regression (over 2, or p99 over 80 ms).
TAIL_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/records_bench_tail
bench: venv redis
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.audit --entries $(AUDIT_BENCH_ENTRIES)
	$(BIN)/python -m bench.signing $(SIGNING_ARGS)
	$(BIN)/python -m bench.soak --strict $(SOAK_ARGS)
	$(BIN)/python -m bench.tail --database-url sqlite:///$(CURDIR)/var/bench-tail.sqlite3 --database-url $(TAIL_POSTGRES_URL) $(TAIL_ARGS)

# The soak alone, as in `make bench` but reporting without failing: rounds of 1,000 connect/close
# cycles, the Daphne's memory census read after each round. A quick look:
# `make bench-soak SOAK_ARGS="--cycles 10000"`; what grows, by allocation site:
# SOAK_ARGS="--cycles 4000 --tracemalloc 10"; a Redis server of your own instead of the private one:
# SOAK_ARGS="--redis-url redis://127.0.0.1:6386" (databases 0-2 are flushed).
bench-soak: venv
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var staticfiles test-artifacts
