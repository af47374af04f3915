"""Structured log fields (issue 8 §5): records of the "promotion" logger carry event_id, promotion_id and model as
attributes, where they apply, so Application Insights shows them as custom dimensions."""

import asyncio
import importlib
import logging
import threading

import pytest

from promotion import logs
from promotion.domain import ModelRef

FIELDS = ("event_id", "promotion_id", "model")


class Records:
    """The records captured so far (caplog keeps one list per test phase, so read it when asked)."""

    def __init__(self, caplog: pytest.LogCaptureFixture):
        self._caplog = caplog

    def __iter__(self):
        return iter(self._caplog.records)

    def __getitem__(self, index: int) -> logging.LogRecord:
        return self._caplog.records[index]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Records:
    caplog.set_level(logging.DEBUG, logger="promotion")
    return Records(caplog)


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


def test_records_inside_the_block_carry_the_fields(records):
    log = logging.getLogger("promotion")
    with logs.fields(event_id="evt-1", promotion_id="p-1", model=ModelRef("churn", "3")):
        log.info("inside")
        log.warning("inside, %s", "with arguments")
        log.debug("debug too")

    assert [record.getMessage() for record in records] == ["inside", "inside, with arguments", "debug too"]
    for record in records:
        assert fields_of(record) == {"event_id": "evt-1", "promotion_id": "p-1", "model": "churn:3"}


def test_outside_the_block_the_fields_are_gone(records):
    log = logging.getLogger("promotion")
    log.info("before")
    with logs.fields(event_id="evt-1", model=ModelRef("churn", "3")):
        log.info("inside")
    log.info("after")

    before, inside, after = records
    assert fields_of(before) == {} and fields_of(after) == {}
    assert fields_of(inside) == {"event_id": "evt-1", "model": "churn:3"}


def test_nested_blocks_merge_and_the_outer_fields_come_back(records):
    log = logging.getLogger("promotion")
    with logs.fields(event_id="evt-1", model="churn:3"):
        with logs.fields(promotion_id="p-1", model="churn:4"):
            log.info("inner")
        log.info("outer again")
    log.info("outside")

    inner, outer, outside = records
    assert fields_of(inner) == {"event_id": "evt-1", "promotion_id": "p-1", "model": "churn:4"}
    assert fields_of(outer) == {"event_id": "evt-1", "model": "churn:3"}
    assert fields_of(outside) == {}


def test_none_leaves_a_field_out_and_keeps_an_outer_value(records):
    log = logging.getLogger("promotion")
    with logs.fields(event_id="evt-1", model=None):
        log.info("no model")
        with logs.fields(event_id=None, promotion_id="p-1"):
            log.info("inner")

    no_model, inner = records
    assert fields_of(no_model) == {"event_id": "evt-1"}
    assert fields_of(inner) == {"event_id": "evt-1", "promotion_id": "p-1"}


def test_the_fields_are_gone_after_an_exception_too(records):
    log = logging.getLogger("promotion")
    with pytest.raises(RuntimeError), logs.fields(promotion_id="p-1"):
        raise RuntimeError("boom")
    log.info("after")

    (after,) = records
    assert fields_of(after) == {}


def test_a_field_given_in_extra_wins(records):
    with logs.fields(event_id="evt-1", promotion_id="p-1"):
        logging.getLogger("promotion").info("explicit", extra={"promotion_id": "p-2"})

    (record,) = records
    assert fields_of(record) == {"event_id": "evt-1", "promotion_id": "p-2"}


def test_values_are_text(records):
    with logs.fields(event_id=12345, model=ModelRef("taxi.fare", "1.0")):
        logging.getLogger("promotion").info("x")

    (record,) = records
    assert record.event_id == "12345" and record.model == "taxi.fare:1.0"


@pytest.mark.parametrize("name", ["eventid", "promotion", "user", "message", "msg", "args"])
def test_unknown_field_names_raise(name):
    with pytest.raises(ValueError, match=name), logs.fields(**{name: "x"}):
        pass


def test_an_unknown_field_leaves_the_context_unchanged(records):
    with pytest.raises(ValueError), logs.fields(event_id="evt-1", bogus="x"):
        pass
    logging.getLogger("promotion").info("after")
    assert fields_of(records[0]) == {}


def test_threads_keep_their_own_fields(records):
    log = logging.getLogger("promotion")
    both_inside = threading.Barrier(2)

    def work(promotion_id: str) -> None:
        with logs.fields(promotion_id=promotion_id):
            both_inside.wait()  # both blocks are open at once
            log.info("from %s", promotion_id)
            both_inside.wait()

    threads = [threading.Thread(target=work, args=(f"p-{n}",)) for n in range(2)]
    with logs.fields(event_id="main-thread"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted((record.getMessage(), fields_of(record)) for record in records) == [
        ("from p-0", {"promotion_id": "p-0"}),
        ("from p-1", {"promotion_id": "p-1"}),
    ]


def test_concurrent_tasks_keep_their_own_fields(records):
    log = logging.getLogger("promotion")

    async def work(event_id: str) -> None:
        with logs.fields(event_id=event_id):
            await asyncio.sleep(0)
            log.info("from %s", event_id)

    async def main() -> None:
        await asyncio.gather(work("evt-a"), work("evt-b"))

    asyncio.run(main())

    assert sorted((record.getMessage(), fields_of(record)) for record in records) == [
        ("from evt-a", {"event_id": "evt-a"}),
        ("from evt-b", {"event_id": "evt-b"}),
    ]


def test_only_the_promotion_logger_gets_the_fields(records, caplog):
    caplog.set_level(logging.INFO, logger="somebody.else")
    with logs.fields(event_id="evt-1"):
        logging.getLogger("somebody.else").info("not ours")
        logging.getLogger("promotion").info("ours")

    by_message = {record.getMessage(): fields_of(record) for record in records}
    assert by_message == {"not ours": {}, "ours": {"event_id": "evt-1"}}


def test_the_service_logs_through_the_promotion_logger():
    for name in ("approval", "copies", "deployment", "lifecycle", "propagation", "reconcile"):
        module = importlib.import_module(f"promotion.service.{name}")
        assert module.log is logging.getLogger("promotion"), name
