"""What the timers cost: the store reads of one run of each timer stay the same however much finished history the
store holds (counted by the store, not timed), and decisions go after PROMOTION_DECISIONS_RETENTION_DAYS."""

from __future__ import annotations

from datetime import timedelta

import pytest

from promotion.domain import ModelRef, State
from tests.contract.test_open_work import add_history
from tests.functions.conftest import timer, user_function
from tests.functions.test_api import request
from tests.functions.test_timers import started

TIMERS = ["advance_registry_copies", "advance_deployments", "publish_lifecycle_events"]
REF = ModelRef("taxi-fare", "1")


def reads_of_one_run(local_app, name: str) -> tuple[int, int]:
    store = local_app.store()
    before = store.reads.snapshot()
    user_function(name)(timer())
    after = store.reads.snapshot()
    return after[0] - before[0], after[1] - before[1]


@pytest.mark.parametrize("name", TIMERS)
def test_a_timer_reads_the_same_with_a_long_history_as_with_none(local_app, app_clock, name):
    started(local_app)
    user_function("advance_registry_copies")(timer())
    assert request()[0] == 201  # a promotion pending approval
    started(local_app, ModelRef("taxi-fare", "2"), event_id="event-2")  # a copy under way
    reads_of_one_run(local_app, name)  # the first run may finish the copy: count from the second one
    empty = reads_of_one_run(local_app, name)

    add_history(local_app.store(), 150, at=app_clock.now - timedelta(hours=1))

    assert reads_of_one_run(local_app, name) == empty
    assert empty[0] <= 6


def test_decisions_go_after_their_retention_and_promotions_stay(local_app, app_clock, monkeypatch):
    monkeypatch.setenv("PROMOTION_DECISIONS_RETENTION_DAYS", "2")
    local_app.reset()
    started(local_app)
    user_function("advance_registry_copies")(timer())
    status, promotion = request()
    assert status == 201
    decided = local_app.store().decisions(REF)
    assert [d.outcome.value for d in decided] == ["copy_started", "copied"]

    app_clock.advance(days=1, hours=23)
    user_function("publish_lifecycle_events")(timer())
    assert local_app.store().decisions(REF) == decided

    app_clock.advance(hours=2)
    user_function("publish_lifecycle_events")(timer())
    assert local_app.store().decisions(REF) == []
    assert local_app.store().get(promotion["id"]).state is State.PENDING_APPROVAL  # never purged
