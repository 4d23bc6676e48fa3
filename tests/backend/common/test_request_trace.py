"""The request -> client trace (issue 33, backend/common/trace.py), in-process: the line (stages in
path order, the slowest named, only over REQUEST_TRACE_WARN_MS), and each process's part of the
stamps: the web request's (ASGI arrival, authentication, the job row's COMMIT, the task's headers),
the worker's (a task's message adopted), the publisher's (the internal channel-layer message). The
whole path across real processes: tests/workers/test_request_trace.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from backend.common import trace
from backend.common.trace import STAGES, TRACE_HEADER
from backend.events import broadcast
from backend.jobs import queue
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

BASE = 1_700_000_000.0


def stamps(**slow_ms: float) -> dict:
    """A change 5 ms per stage, except the stages named (ms)."""
    at, out = BASE, {"job": "j-1"}
    for stage in STAGES:
        if stage != "received":
            at += slow_ms.get(stage, 5.0) / 1000
        out[stage] = at
    return out


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == trace.logger.name]


@pytest.fixture(autouse=True)
def no_trace_around():
    trace.trace_end()
    yield
    trace.trace_end()


def test_the_line_lists_every_stage_in_path_order_and_names_the_slow_one():
    line = trace.trace_line(stamps(job_row_committed=240), unit_id="u-1", seq=7)
    parsed = trace.parse_trace_line(line)
    assert list(parsed["stages"]) == list(STAGES[1:])
    assert parsed["slowest"] == "authenticated -> job_row_committed"
    assert parsed["stages"]["job_row_committed"] == pytest.approx(240, abs=0.1)
    assert (parsed["job"], parsed["unit"], parsed["seq"], parsed["total_ms"]) == ("j-1", "u-1", "7", 275)
    assert parsed["received"] == pytest.approx(BASE, abs=1e-6)


@pytest.mark.parametrize("stage", STAGES[1:])
def test_whichever_stage_is_forced_slow_is_the_one_named(stage):
    parsed = trace.parse_trace_line(trace.trace_line(stamps(**{stage: 300})))
    before = STAGES[STAGES.index(stage) - 1]
    assert parsed["slowest"] == f"{before} -> {stage}"


def test_the_sqlite_lock_wait_is_part_of_the_line_when_there_was_one():
    with_lock = trace.parse_trace_line(trace.trace_line({**stamps(), trace.SQLITE_LOCK_FIELD: 12.34}))
    assert with_lock[trace.SQLITE_LOCK_FIELD] == pytest.approx(12.3)
    assert trace.SQLITE_LOCK_FIELD not in trace.parse_trace_line(trace.trace_line(stamps()))


def test_a_missing_stamp_joins_its_neighbours_stages():
    partial = stamps(worker_received=50)
    del partial["enqueued"]
    parsed = trace.parse_trace_line(trace.trace_line(partial))
    assert "enqueued" not in parsed["stages"]
    assert parsed["stages"]["worker_received"] == pytest.approx(55, abs=0.1)


def test_only_a_change_slower_than_the_limit_is_logged(settings, caplog):
    settings.REQUEST_TRACE_WARN_MS = 100
    quick = {k: v for k, v in stamps().items() if k != "handed_over"}
    with caplog.at_level(logging.WARNING, logger=trace.logger.name):
        assert not trace.trace_handed_over(quick, "u", 1, at=BASE + 0.099)
        assert trace.trace_handed_over(quick, "u", 2, at=BASE + 0.101)
    [line] = lines(caplog)
    assert trace.parse_trace_line(line)["seq"] == "2"
    assert trace.parse_trace_line(line)["slowest"] == "published -> handed_over"


def test_a_bulk_chunks_line_is_information_not_a_warning(settings, caplog):
    settings.REQUEST_TRACE_WARN_MS = 50
    with caplog.at_level(logging.INFO, logger=trace.logger.name):
        trace.trace_handed_over(stamps(), "u", 1, at=BASE + 10, events=500)
        trace.trace_handed_over(stamps(), "u", 501, at=BASE + 10, events=2)
    assert [r.levelno for r in caplog.records if r.name == trace.logger.name] == [logging.INFO, logging.WARNING]


def test_nothing_is_logged_with_the_limit_at_zero_or_without_a_request(settings, caplog):
    with caplog.at_level(logging.WARNING, logger=trace.logger.name):
        settings.REQUEST_TRACE_WARN_MS = 0
        assert not trace.trace_handed_over(stamps(), "u", 1, at=BASE + 10)
        settings.REQUEST_TRACE_WARN_MS = 50
        no_request = {k: v for k, v in stamps().items() if k != "received"}
        assert not trace.trace_handed_over(no_request, "u", 1, at=BASE + 10)
        assert not trace.trace_handed_over(None, "u", 1, at=BASE + 10)
        assert not trace.trace_handed_over({"received": "forged"}, "u", 1, at=BASE + 10)
    assert lines(caplog) == []


# --- each process's part ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # (the job row really commits, within the request)
def test_a_relocation_request_sends_its_task_with_the_web_stamps_in_order(api, monkeypatch):
    sent = []
    monkeypatch.setattr(queue.app, "send_task", lambda *args, **kwargs: sent.append(kwargs))
    unit = UnitFactory()
    store = unit_staff(unit)["store"]
    crate = CrateFactory(unit=unit)

    answer = api(store).post(f"/api/crates/{crate.id}/relocate/", {"location": "Bay 2"}, format="json")

    assert answer.status_code == 202, answer.content
    [task] = sent
    carried = task["headers"][TRACE_HEADER]
    assert carried["job"] == answer.json()["job"]["id"]
    web = ["received", "authenticated", "job_row_committed"]
    assert [s for s in STAGES if s in carried] == web
    assert carried["received"] <= carried["authenticated"] <= carried["job_row_committed"]
    assert trace.trace_current() is None  # the request's trace ended with it


@pytest.mark.django_db
def test_an_unauthenticated_request_stamps_no_authentication(api, monkeypatch):
    seen = []
    monkeypatch.setattr("backend.accounts.tokens.trace_stamp", lambda *a, **k: seen.append(a))
    assert api().get("/api/crates/").status_code == 401
    assert api(unit_staff(UnitFactory())["store"]).get("/api/crates/").status_code == 200
    assert seen == [("authenticated",)]  # the second request's only


def test_the_enqueued_stamp_is_put_on_the_message_as_it_goes_to_the_broker():
    headers = {TRACE_HEADER: {"received": BASE, "job": "j"}}
    queue._trace_enqueued(headers=headers)
    assert headers[TRACE_HEADER]["enqueued"] > BASE
    untouched = {"id": "x"}
    queue._trace_enqueued(headers=untouched)
    assert untouched == {"id": "x"}


def test_a_task_adopts_the_trace_its_message_carries_and_stamps_its_receipt():
    trace.task_trace_start(SimpleNamespace(records_trace={"received": BASE, "job": "j"}))
    current = trace.trace_current()
    assert current["job"] == "j" and current["worker_received"] > BASE
    trace.trace_end()
    # (Celery keeps custom headers under request.headers in some versions)
    trace.task_trace_start(SimpleNamespace(headers={TRACE_HEADER: {"received": BASE}}))
    assert trace.trace_current()["received"] == BASE
    trace.trace_end()
    trace.task_trace_start(SimpleNamespace(headers=None))  # a task from beat or the relay
    assert trace.trace_current() is None


def test_the_publish_carries_the_trace_to_the_hub_in_the_channel_layer_message_only(monkeypatch):
    calls = []

    async def nothing():
        pass

    def capture(batches, stamps=None):
        calls.append(stamps)
        return nothing()

    monkeypatch.setattr(broadcast, "_send_unit_events", capture)
    monkeypatch.setattr(broadcast, "_run", lambda coro, timeout=0: coro.close())
    broadcast.unit_events_send([("u", [(1, "{}")])])  # no trace: none sent
    trace.trace_begin(received=BASE)
    broadcast.unit_events_send([("u", [(2, "{}")])])
    assert calls[0] is None
    assert calls[1]["received"] == BASE and calls[1]["published"] > BASE

    message = broadcast.unit_events_message("u", [(2, '{"type":"data_update"}')], calls[1])
    assert message["trace"] == calls[1]
    assert message["events"] == [[2, '{"type":"data_update"}']]  # the frame a client gets: unchanged
    assert "trace" not in broadcast.unit_events_message("u", [(2, "{}")])
