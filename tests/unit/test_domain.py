import random
import re
import string
from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from promotion.domain import (
    APPROVAL_ACTION,
    OPEN_STATES,
    TRANSITIONS,
    InvalidTransition,
    ModelRef,
    Promotion,
    State,
    deployment_name,
    online_name,
    split_traffic,
    version_order,
)

AT = datetime(2026, 11, 26, tzinfo=timezone.utc)
# Azure's rule for online endpoint and deployment names: 3-32 characters, a letter first, then letters, digits and
# '-', not ending in '-'. Names are kept lower case, so names that differ only in case are different names.
AZURE_ONLINE_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]")


def assert_valid(name: str) -> None:
    assert AZURE_ONLINE_NAME.fullmatch(name), f"{name!r} is not a valid online endpoint or deployment name"
    assert 3 <= len(name) <= 32


def pending(at: datetime = AT) -> Promotion:
    return Promotion("p", ModelRef("m", "1"), State.PENDING_APPROVAL, "alice", at, at)


# -- traffic ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "percent", "desired"),
    [
        ({}, 20, {"new": 100}),
        ({"new": 100}, 20, {"new": 100}),
        ({"old": 100}, 20, {"new": 20, "old": 80}),
        ({"new": 20, "old": 80}, 20, {"new": 20, "old": 80}),
        ({"old": 100}, 100, {"new": 100}),
        ({"a": 50, "b": 50}, 30, {"new": 30, "b": 70}),  # a tie, without versions known: the later name
        ({"m-v9": 50, "m-v10": 50}, 50, {"new": 50, "m-v10": 50}),  # names in natural order
        ({"a": 10, "b": 60, "new": 30}, 30, {"new": 30, "b": 70}),
        ({"old": 0}, 20, {"new": 100}),  # a deployment without traffic is not the live one
    ],
)
def test_split_traffic(current, percent, desired):
    assert split_traffic(current, "new", percent) == desired
    assert split_traffic(desired, "new", percent) == desired  # applying it twice changes nothing


def test_a_tie_in_traffic_goes_to_the_most_recent_version_served():
    models = {"x": "churn:10", "y": "churn:9", "z": None}
    assert split_traffic({"y": 50, "x": 50}, "new", 50, models) == {"new": 50, "x": 50}
    assert split_traffic({"z": 50, "y": 50}, "new", 50, models) == {"new": 50, "y": 50}  # unknown is oldest
    assert split_traffic({"y": 60, "x": 40}, "new", 50, models) == {"new": 50, "y": 50}  # more traffic wins first


# -- the state machine --------------------------------------------------------------------------------------

# The issue's state machine, written out: pending requests expire, a live promotion can be rolled back, and a
# rollback Azure refused leaves it live.
EXPECTED_TRANSITIONS = {
    State.PENDING_APPROVAL: {State.APPROVED, State.REJECTED, State.EXPIRED, State.VOIDED},
    State.APPROVED: {State.DEPLOYING, State.FAILED, State.VOIDED},
    State.DEPLOYING: {State.DEPLOYED, State.FAILED},
    State.DEPLOYED: {State.ROLLING_BACK},
    State.ROLLING_BACK: {State.ROLLED_BACK, State.DEPLOYED},
    State.REJECTED: set(),
    State.EXPIRED: set(),
    State.FAILED: set(),
    State.ROLLED_BACK: set(),
    State.VOIDED: set(),
}
TERMINAL = (State.REJECTED, State.EXPIRED, State.FAILED, State.ROLLED_BACK, State.VOIDED)


def test_the_state_machine_is_the_documented_one():
    assert set(TRANSITIONS) == set(State)
    assert {state: set(targets) for state, targets in TRANSITIONS.items()} == EXPECTED_TRANSITIONS
    assert {State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING} == OPEN_STATES


@pytest.mark.parametrize("current", list(State))
@pytest.mark.parametrize("wanted", list(State))
def test_move_follows_the_state_machine_and_nothing_else(current, wanted):
    promotion = Promotion("p", ModelRef("m", "1"), current, "alice", AT, AT)
    if wanted in EXPECTED_TRANSITIONS[current]:
        moved = promotion.move(wanted, actor="x", at=AT + timedelta(minutes=1))
        assert moved.state is wanted
        assert moved.history[-1].action == wanted.value
    else:
        with pytest.raises(InvalidTransition, match=f"from {current.value} to {wanted.value}"):
            promotion.move(wanted, actor="x", at=AT + timedelta(minutes=1))


@pytest.mark.parametrize("terminal", TERMINAL)
def test_nothing_leaves_a_terminal_state(terminal):
    promotion = Promotion("p", ModelRef("m", "1"), terminal, "alice", AT, AT)
    assert not promotion.is_open
    for wanted in State:
        with pytest.raises(InvalidTransition):
            promotion.move(wanted, actor="x", at=AT)


def test_the_paths_the_issue_names():
    start = pending()
    expired = start.move(State.EXPIRED, actor="timer", at=AT + timedelta(hours=169))
    assert expired.state is State.EXPIRED and not expired.is_open

    deployed = (
        start.move(State.APPROVED, actor="bob", at=AT)
        .move(State.DEPLOYING, actor="worker", at=AT)
        .move(State.DEPLOYED, actor="worker", at=AT)
    )
    rolled_back = deployed.move(State.ROLLING_BACK, actor="bob", at=AT).move(State.ROLLED_BACK, actor="w", at=AT)
    refused = deployed.move(State.ROLLING_BACK, actor="bob", at=AT).move(State.DEPLOYED, actor="w", at=AT)
    assert rolled_back.state is State.ROLLED_BACK
    assert refused.state is State.DEPLOYED
    assert [entry.action for entry in rolled_back.history] == [
        "approved",
        "deploying",
        "deployed",
        "rolling_back",
        "rolled_back",
    ]


def test_move_records_the_change_and_the_field_changes():
    approved = pending().move(State.APPROVED, actor="carol", at=AT, detail={"comment": "ok"}, approved_by="carol")
    assert approved.history[-1].action == "approved" and approved.approved_by == "carol"
    assert approved.history[-1].actor == "carol" and dict(approved.history[-1].detail) == {"comment": "ok"}
    failed = approved.move(State.FAILED, actor="poison", at=AT)
    with pytest.raises(InvalidTransition, match="from failed to deploying"):
        failed.move(State.DEPLOYING, actor="x", at=AT)


# -- history stays in order ---------------------------------------------------------------------------------


def test_history_stays_strictly_increasing_when_the_clock_goes_back():
    promotion = pending()
    clock_readings = [AT + timedelta(minutes=5), AT - timedelta(hours=1), AT + timedelta(minutes=5), AT]

    for index, reading in enumerate(clock_readings):
        promotion = promotion.note(f"step-{index}", actor="x", at=reading)

    moments = [entry.at for entry in promotion.history]
    assert moments[0] == AT + timedelta(minutes=5)  # a later clock is taken as it is
    assert all(earlier < later for earlier, later in pairwise(moments))
    assert moments[0] > promotion.created_at
    assert promotion.updated_at == moments[-1] == promotion.last_entry_at


def test_the_first_entry_comes_after_the_creation_even_with_an_earlier_clock():
    promotion = pending().move(State.APPROVED, actor="bob", at=AT - timedelta(days=1))
    assert promotion.history[0].at > promotion.created_at
    assert promotion.history[0].at - promotion.created_at < timedelta(milliseconds=1)


def test_next_moment_keeps_a_later_time_and_moves_an_earlier_or_equal_one_just_after_the_last():
    promotion = pending().note("requested", actor="alice", at=AT + timedelta(minutes=1))
    last = promotion.history[-1].at
    later = last + timedelta(seconds=3)

    assert promotion.next_moment(later) == later
    assert last < promotion.next_moment(last) < later
    assert last < promotion.next_moment(last - timedelta(days=3)) < later
    assert promotion.next_moment(last) == promotion.next_moment(last - timedelta(days=3))


def test_note_keeps_the_state_unless_changed():
    noted = pending().note("comment", actor="bob", at=AT, detail={"text": "hi"})
    assert noted.state is State.PENDING_APPROVAL
    assert noted.history[-1].action == "comment"


# -- approvals come from the history ------------------------------------------------------------------------


def test_approvals_are_the_history_entries_of_approvers():
    promotion = pending().note("requested", actor="alice", at=AT, detail={"principal_id": "id-a"})
    promotion = promotion.note(APPROVAL_ACTION, actor="bob", at=AT)
    promotion = promotion.note("comment", actor="dave", at=AT)
    promotion = promotion.note(APPROVAL_ACTION, actor="carol", at=AT)

    assert [entry.actor for entry in promotion.approvals] == ["bob", "carol"]
    assert promotion.to_json()["approvals"] == ["bob", "carol"]
    assert promotion.requester_id == "id-a"
    assert promotion.state is State.PENDING_APPROVAL  # approvals alone change no state

    approved = promotion.move(State.APPROVED, actor="carol", at=AT, approved_by="carol")
    assert [entry.actor for entry in approved.approvals] == ["bob", "carol"]  # the move is no extra approval


def test_a_promotion_without_history_has_no_approvals_and_no_requester_id():
    assert pending().approvals == ()
    assert pending().requester_id is None


# -- names in production ------------------------------------------------------------------------------------


def test_names_that_azure_would_merge_stay_apart():
    endpoints = [online_name(f"{name}-prod") for name in ("taxi.fare", "Taxi_Fare", "taxi-fare")]
    deployments = [deployment_name(ModelRef(name, "1")) for name in ("taxi.fare", "Taxi_Fare", "taxi-fare")]
    versions = [deployment_name(ModelRef("taxi-fare", version)) for version in ("1.0", "1_0", "1-0")]

    for names in (endpoints, deployments, versions):
        assert len(set(names)) == 3, names
        for name in names:
            assert_valid(name)


def test_valid_names_are_used_as_they_are():
    assert online_name("taxi-fare-v1") == "taxi-fare-v1"
    assert online_name("taxi-fare-prod") == "taxi-fare-prod"
    assert online_name("abc") == "abc"
    assert online_name("a" + "b" * 31) == "a" + "b" * 31  # 32 characters, the longest
    assert deployment_name(ModelRef("taxi-fare", "1")) == "taxi-fare-v1"
    assert deployment_name(ModelRef("credit", "20")) == "credit-v20"


@pytest.mark.parametrize(
    "text",
    [
        "Taxi_Fare",
        "taxi.fare",
        "ab",  # too short
        "a" * 33,  # too long
        "1model",  # a digit first
        "-model",
        "model-",  # a '-' last
        "___",
        "",
        "ünïcode-näme",
        "UPPER",
        "x" * 300,
    ],
)
def test_invalid_names_are_made_valid_readable_and_distinct(text):
    name = online_name(text)
    assert_valid(name)
    assert name != text
    assert re.search(r"[a-z0-9]--[0-9a-z]{25}$", name), "a digest of the exact text tells apart what cleanup merges"
    assert online_name(text) == name  # stable: the same text always gets the same name


def test_readable_part_of_a_made_up_name_follows_the_text():
    assert online_name("Taxi_Fare-prod").startswith("taxi--")
    assert online_name("Churn.V2").startswith("churn--")
    assert deployment_name(ModelRef("Taxi_Fare", "1")).startswith("taxi--")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # found by a second of search against the old 32-bit digest
        ("t-a-x_i_f-a-r_e_m_o-d_e-l", "t-a_x-i_f-a-r.e.m-o_d.e_l"),
        # with the endpoint template "{name}": a made-up name that another model's name spells out
        ("Fraud", "fraud-1baabd47"),
        ("Fraud", online_name("Fraud")),
        ("Fraud", online_name("Fraud").replace("--", "-")),
    ],
)
def test_names_found_to_collide_stay_apart(one, other):
    assert online_name(one) != online_name(other)
    assert deployment_name(ModelRef(one, "1")) != deployment_name(ModelRef(other, "1"))


def test_a_made_up_name_carries_at_least_128_bits_of_digest():
    name = online_name("Taxi_Fare")
    digest = name.rpartition("--")[2]
    assert len(digest) == 25 and 36**25 >= 2**128
    assert online_name(name) != name  # a name with '--' is never used as it is: only made-up names have it


def test_a_made_up_name_never_equals_another_models_unchanged_name():
    # "taxi-fare:1.0" gets a digest; "taxi-fare" version "10" keeps its readable name; neither takes the other's.
    assert deployment_name(ModelRef("taxi-fare", "1.0")) != deployment_name(ModelRef("taxi-fare", "10"))
    assert deployment_name(ModelRef("taxi-fare-v1", "0")) != deployment_name(ModelRef("taxi-fare", "1-v0"))
    assert deployment_name(ModelRef("a-v1", "2")) != deployment_name(ModelRef("a", "1-v2"))


_NAME_CHARS = string.ascii_letters + string.digits + "._-"


def _random_models(seed: int, count: int) -> list[ModelRef]:
    rng = random.Random(seed)
    # Few characters and short texts, so that many names differ only by case or punctuation, as in the issue.
    alphabet = "aAbB1._-"
    models: set[ModelRef] = set()
    while len(models) < count:
        name_chars = alphabet if rng.random() < 0.7 else _NAME_CHARS
        length = rng.choice([1, 2, 3, 4, 6, 10, 31, 32, 33, 40, 80])
        name = rng.choice(string.ascii_letters + string.digits) + "".join(
            rng.choice(name_chars) for _ in range(length - 1)
        )
        version = rng.choice(string.digits + "ab") + "".join(rng.choice("01._-ab") for _ in range(rng.randint(0, 4)))
        models.add(ModelRef(name, version))
    return sorted(models)


def test_random_names_give_distinct_valid_names():
    models = _random_models(seed=20261126, count=400)
    texts = sorted({model.name for model in models} | {f"{model.name}-prod" for model in models})

    endpoints = {text: online_name(text) for text in texts}
    deployments = {model: deployment_name(model) for model in models}

    for name in [*endpoints.values(), *deployments.values()]:
        assert_valid(name)
    assert len(set(endpoints.values())) == len(endpoints)
    assert len(set(deployments.values())) == len(deployments)
    for text, name in endpoints.items():
        # unchanged exactly when already valid and without the '--' that marks made-up names
        assert (name == text) == bool(AZURE_ONLINE_NAME.fullmatch(text) and "--" not in text)


def test_random_near_collisions_of_one_name_stay_apart():
    # The issue's case, at scale: every spelling of one name that Azure's alphabet would fold together.
    rng = random.Random(7)
    base = "taxi-fare"
    spellings = set()
    while len(spellings) < 300:
        spellings.add(
            "".join((ch.upper() if rng.random() < 0.5 else ch) if ch != "-" else rng.choice("-_.") for ch in base)
            + rng.choice(["", "-", "_", ".", "-1", "_1", ".1"])
        )
    names = [online_name(spelling) for spelling in spellings]
    assert len(set(names)) == len(spellings)
    for name in names:
        assert_valid(name)


# -- version order ------------------------------------------------------------------------------------------


def test_versions_sort_naturally():
    assert version_order("10") > version_order("9")
    assert version_order("1.10") > version_order("1.9")
    assert version_order("1.9") > version_order("1.2")
    assert version_order("2") > version_order("1.99")
    assert version_order("2025.10-rc1") > version_order("2025.9-rc2")
    assert sorted(["10", "9", "1", "100", "2"], key=version_order) == ["1", "2", "9", "10", "100"]
    assert sorted(["1.10", "1.9", "1.2.3", "1.2"], key=version_order) == ["1.2", "1.2.3", "1.9", "1.10"]


def test_version_order_never_fails_on_mixed_versions():
    versions = ["1", "1a", "a1", "a", "1.0", "1_0", "1-0", "v2", "2", "rc", "10b"]
    ordered = sorted(versions, key=version_order)
    assert sorted(ordered, key=version_order) == ordered
    assert ordered.index("2") < ordered.index("10b")
