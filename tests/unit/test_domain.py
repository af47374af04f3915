from datetime import datetime, timezone

import pytest

from promotion.domain import InvalidTransition, ModelRef, Promotion, State, split_traffic

AT = datetime(2026, 11, 26, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("current", "percent", "desired"),
    [
        ({}, 20, {"new": 100}),
        ({"new": 100}, 20, {"new": 100}),
        ({"old": 100}, 20, {"new": 20, "old": 80}),
        ({"new": 20, "old": 80}, 20, {"new": 20, "old": 80}),
        ({"old": 100}, 100, {"new": 100}),
        ({"a": 50, "b": 50}, 30, {"new": 30, "a": 70}),
        ({"a": 10, "b": 60, "new": 30}, 30, {"new": 30, "b": 70}),
    ],
)
def test_split_traffic(current, percent, desired):
    assert split_traffic(current, "new", percent) == desired


def test_promotion_moves_only_along_the_state_machine():
    pending = Promotion("p", ModelRef("m", "1"), State.PENDING_APPROVAL, "alice", AT, AT)
    approved = pending.move(State.APPROVED, actor="carol", at=AT, detail={"comment": "ok"}, approved_by="carol")
    assert approved.history[-1].action == "approved" and approved.approved_by == "carol"
    for wrong in (State.DEPLOYED, State.PENDING_APPROVAL, State.REJECTED):
        with pytest.raises(InvalidTransition):
            approved.move(wrong, actor="x", at=AT)
    failed = approved.move(State.FAILED, actor="poison", at=AT)
    with pytest.raises(InvalidTransition, match="from failed to deploying"):
        failed.move(State.DEPLOYING, actor="x", at=AT)
