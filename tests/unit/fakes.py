"""Hand-written fakes of the ports, for fast tests of the service layer.

They are as strict as the real adapters, so the service cannot lean on a kindness Azure does not have:

- model versions are immutable values; the registry changes only a version's tags and description (`tag`), always
  after `check` has seen the version as held, and never when `check` raises;
- a registry copy never finishes inside `start_copy`: its status reads RUNNING for `copy_polls` status reads (at
  least one), and only then does the registry hold the version (content and properties, no tags: lineage and
  the source's tags come with `tag`, as with Azure's publish);
- a deployer step answers PENDING for `polls` calls before it is done, and traffic moves only to deployments the
  endpoint has.

Every fake counts the requests it answers (`calls`), keeps its state in plain attributes for the tests to
assert on, and is safe to share between threads. `FakeClock` is the controllable clock the use cases take, and
`Production` plays the approval, deployment and rollback use cases over one set of ports.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from promotion import service
from promotion.domain import DEPLOYMENT_MODEL_TAG, LifecycleEvent, ModelRef, ModelVersion, Promotion, State
from promotion.identity import Principal
from promotion.policy import ProductionRules
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyStatus,
    DeploymentFailed,
    DeploymentPlan,
    EndpointState,
    Progress,
    TagUpdate,
)

UTC = timezone.utc


class FakeClock:
    """A controllable clock: a callable returning aware UTC datetimes. Each reading moves it on by `step` (1 ms by
    default, so consecutive changes are ordered); `advance` jumps ahead, `rewind` goes back (hosts disagree)."""

    def __init__(self, start: datetime = datetime(2026, 11, 26, 12, 0, tzinfo=UTC), step: timedelta | None = None):
        self.now = start
        self.step = timedelta(milliseconds=1) if step is None else step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            moment = self.now
            self.now += self.step
            return moment

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += timedelta(**delta)

    def rewind(self, **delta: float) -> None:
        with self._lock:
            self.now -= timedelta(**delta)


class _Counted:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.RLock()

    def _count(self, request: str) -> None:
        with self._lock:
            self.calls[request] += 1

    @property
    def requests(self) -> int:
        """Every request answered so far (a registry `tag` is two: the read and the write)."""
        return sum(self.calls.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()


class FakeWorkspace(_Counted):
    """The staging workspace. `list_errors` maps a model name to the error its version listing raises."""

    def __init__(self, *models: ModelVersion):
        super().__init__()
        self.models: dict[ModelRef, ModelVersion] = {model.ref: model for model in models}
        self.list_errors: dict[str, Exception] = {}
        self.get_error: Exception | None = None

    def get(self, ref: ModelRef) -> ModelVersion | None:
        self._count("get")
        if self.get_error is not None:
            raise self.get_error
        with self._lock:
            return self.models.get(ref)

    def names(self) -> list[str]:
        self._count("names")
        with self._lock:
            return sorted({ref.name for ref in self.models})

    def versions(self, name: str) -> list[ModelVersion]:
        self._count("versions")
        if name in self.list_errors:
            raise self.list_errors[name]
        with self._lock:
            return [model for ref, model in sorted(self.models.items()) if ref.name == name]

    def set_tags(self, ref: ModelRef, tags: Mapping[str, str]) -> ModelVersion:
        """`az ml model update --set tags.K=V`: tags change in place, and no event is emitted (not a request)."""
        with self._lock:
            changed = replace(self.models[ref], tags={**self.models[ref].tags, **tags})
            self.models[ref] = changed
            return changed


@dataclass
class FakeCopy:
    """One copy operation the fake registry runs."""

    handle: str
    model: ModelVersion
    polls_left: int
    fail_with: str | None = None
    status_error: Exception | None = None  # raised by every status read of this copy
    done: bool = False


class FakeRegistry(_Counted):
    """The shared registry. A started copy answers RUNNING for `copy_polls` status reads, then lands in the
    registry and answers SUCCEEDED (or FAILED with `fail_copies_with`, the service's message). With `tag_polls`,
    a tag update is a long-running operation: accepted, then applied after that many `tag_status` reads (or
    FAILED with `fail_tags_with`)."""

    def __init__(self, *models: ModelVersion, copy_polls: int = 1, tag_polls: int = 0):
        super().__init__()
        self.models: dict[ModelRef, ModelVersion] = {model.ref: model for model in models}
        self.copy_polls = copy_polls
        self.operations: dict[str, FakeCopy] = {}
        self.fail_copies_with: str | None = None
        self.start_error: Exception | None = None  # raised by start_copy before anything starts
        self.get_error: Exception | None = None
        self.appears_on_start: ModelVersion | None = None  # someone else's copy landing just before ours starts
        self.tag_polls = tag_polls
        self.fail_tags_with: str | None = None
        self.status_error: Exception | None = None  # raised by every tag_status read
        self.tag_updates: dict[str, tuple[ModelRef, ModelVersion, int]] = {}  # handle -> (ref, tagged, polls left)
        self._handles = itertools.count(1)

    # -- reads

    def get(self, ref: ModelRef) -> ModelVersion | None:
        self._count("get")
        if self.get_error is not None:
            raise self.get_error
        with self._lock:
            return self.models.get(ref)

    def versions(self, name: str) -> list[ModelVersion]:
        self._count("versions")
        with self._lock:
            return [model for ref, model in sorted(self.models.items()) if ref.name == name]

    # -- copies

    def start_copy(self, model: ModelVersion) -> str:
        self._count("start_copy")
        with self._lock:
            if self.start_error is not None:
                raise self.start_error
            if self.appears_on_start is not None and self.appears_on_start.ref == model.ref:
                self.models[model.ref] = self.appears_on_start
            if model.ref in self.models:
                raise AlreadyExists(f"the registry holds {model.ref} already")
            handle = f"op-{next(self._handles)}"
            self.operations[handle] = FakeCopy(
                handle, model, polls_left=max(1, self.copy_polls), fail_with=self.fail_copies_with
            )
            return handle

    def copy_status(self, operation: str) -> CopyStatus:
        self._count("copy_status")
        with self._lock:
            copy = self.operations.get(operation)
            if copy is None:
                return CopyStatus(CopyProgress.FAILED, f"unknown operation {operation}")
            if copy.status_error is not None:
                raise copy.status_error
            if copy.polls_left > 0:
                copy.polls_left -= 1
                return CopyStatus(CopyProgress.RUNNING)
            if copy.fail_with is not None:
                return CopyStatus(CopyProgress.FAILED, copy.fail_with)
            if not copy.done:
                # Like Azure's publish: the content, type and properties; tags and description come with `tag`.
                source = copy.model
                self.models[source.ref] = ModelVersion(
                    source.ref, source.type, {}, dict(source.properties), None, f"registry/{source.ref}"
                )
                copy.done = True
            return CopyStatus(CopyProgress.SUCCEEDED)

    def in_flight(self) -> list[FakeCopy]:
        return [copy for copy in self.operations.values() if not copy.done and copy.fail_with is None]

    # -- metadata

    def tag(
        self,
        ref: ModelRef,
        tags: Mapping[str, str],
        description: str | None,
        *,
        check: Callable[[ModelVersion], None] = lambda held: None,
    ) -> ModelVersion | None:
        self._count("tag_get")
        with self._lock:
            held = self.models.get(ref)
            if held is None:
                return None
            check(held)  # whatever it raises leaves the version untouched
            self._count("tag_put")
            # Only tags and the description may change; the content (type, properties, path) is immutable.
            tagged = replace(held, tags={**held.tags, **tags}, description=held.description or description)
            assert (tagged.type, tagged.properties, tagged.path) == (held.type, held.properties, held.path)
            if self.tag_polls > 0:
                handle = f"tag-{next(self._handles)}"
                self.tag_updates[handle] = (ref, tagged, self.tag_polls)
                return TagUpdate(handle)
            self.models[ref] = tagged
            return tagged

    def tag_status(
        self, ref: ModelRef, operation: str, tags: Mapping[str, str], description: str | None = None
    ) -> CopyStatus:
        self._count("tag_status")
        with self._lock:
            if self.status_error is not None:
                raise self.status_error
            if operation not in self.tag_updates:
                return CopyStatus(CopyProgress.FAILED, f"unknown operation {operation}")
            ref, tagged, left = self.tag_updates[operation]
            if left > 0:
                self.tag_updates[operation] = (ref, tagged, left - 1)
                return CopyStatus(CopyProgress.RUNNING)
            if self.fail_tags_with is not None:
                return CopyStatus(CopyProgress.FAILED, self.fail_tags_with)
            self.models[ref] = tagged
            return CopyStatus(CopyProgress.SUCCEEDED)


@dataclass
class FakeEndpoint:
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> model_uri, model, tags
    traffic: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class FakeDeployer:
    """The production workspace. Endpoint and deployment operations answer PENDING for `polls` calls (per name,
    overridden in `polls_for`), a traffic change for `traffic_polls` calls (while one is under way, set_traffic
    answers PENDING, as Azure's busy endpoint does). `failures` maps an endpoint or
    deployment name to the error its step raises (DeploymentFailed for a permanent one, anything else for a
    transient one); `refuse_traffic` is raised by set_traffic."""

    def __init__(self, *, polls: int = 0, traffic_polls: int = 0):
        self.polls = polls
        self.polls_for: dict[str, int] = {}
        self.traffic_polls = traffic_polls
        self.failures: dict[str, Exception] = {}
        self.refuse_traffic: Exception | None = None
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.calls: Counter[str] = Counter()
        self._pending: dict[tuple[str, str], int] = {}
        self._traffic_change: dict[str, tuple[dict[str, int], int]] = {}
        self._lock = threading.RLock()

    def _step(self, kind: str, name: str) -> Progress:
        key = (kind, name)
        if key not in self._pending:
            self._pending[key] = self.polls_for.get(name, self.polls)
        if self._pending[key] > 0:
            self._pending[key] -= 1
            return Progress.PENDING
        return Progress.READY

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        with self._lock:
            self.calls["ensure_endpoint"] += 1
            if plan.endpoint in self.failures:
                raise self.failures[plan.endpoint]
            self.endpoints.setdefault(plan.endpoint, FakeEndpoint(tags=dict(plan.endpoint_tags)))
            return self._step("endpoint", plan.endpoint)

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        with self._lock:
            self.calls["ensure_deployment"] += 1
            if plan.deployment in self.failures:
                raise self.failures[plan.deployment]
            endpoint = self.endpoints.get(plan.endpoint)
            if endpoint is None:
                raise DeploymentFailed(f"(ResourceNotFound) online endpoint {plan.endpoint} does not exist")
            existing = endpoint.deployments.get(plan.deployment)
            if existing is not None and existing["model_uri"] != plan.model_uri:
                raise DeploymentFailed(
                    f"online deployment {plan.deployment} on {plan.endpoint} serves {existing['model_uri']}"
                )
            endpoint.deployments.setdefault(
                plan.deployment,
                {"model_uri": plan.model_uri, "model": str(plan.model), "tags": dict(plan.tags)},
            )
            return self._step("deployment", plan.deployment)

    def endpoint(self, name: str) -> EndpointState | None:
        with self._lock:
            self.calls["endpoint"] += 1
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                return None
            return EndpointState(
                traffic={deployment: share for deployment, share in endpoint.traffic.items() if share},
                models={
                    deployment: spec["tags"].get(DEPLOYMENT_MODEL_TAG, spec.get("model"))
                    for deployment, spec in endpoint.deployments.items()
                },
                busy=name in self._traffic_change,
                tags=dict(endpoint.tags),
            )

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int]) -> Progress:
        with self._lock:
            self.calls["set_traffic"] += 1
            if self.refuse_traffic is not None:
                raise self.refuse_traffic
            state = self.endpoints.get(endpoint)
            if state is None:
                raise DeploymentFailed(f"(ResourceNotFound) online endpoint {endpoint} does not exist")
            wanted = {name: share for name, share in traffic.items() if share}
            missing = sorted(set(wanted) - set(state.deployments))
            if missing:
                raise DeploymentFailed(f"online endpoint {endpoint} has no deployment {', '.join(missing)}")
            change = self._traffic_change.get(endpoint)
            if change is not None:  # an update is under way (perhaps ours): it goes on, and we wait for it
                target, polls_left = change
                if polls_left > 0:
                    self._traffic_change[endpoint] = (target, polls_left - 1)
                    return Progress.PENDING
                del self._traffic_change[endpoint]
                state.traffic = dict(target)
                return Progress.READY if target == wanted else Progress.PENDING
            if state.traffic == wanted:
                return Progress.READY
            if self.traffic_polls == 0:
                state.traffic = wanted
                return Progress.READY
            self._traffic_change[endpoint] = (wanted, self.traffic_polls - 1)
            return Progress.PENDING

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "endpoint": name,
                    "deployment": deployment,
                    "traffic": endpoint.traffic.get(deployment, 0),
                    "state": "Succeeded",
                }
                for name, endpoint in self.endpoints.items()
                for deployment, spec in endpoint.deployments.items()
                if spec["tags"].get(DEPLOYMENT_MODEL_TAG) == str(model)
            ]

    def live(self, endpoint: str) -> dict[str, int]:
        """The endpoint's traffic as it stands (not a request)."""
        with self._lock:
            return dict(self.endpoints[endpoint].traffic) if endpoint in self.endpoints else {}


class FakePublisher:
    """An Event Grid topic. `accept` is how many more batches it takes before it goes down (None: no limit);
    `down` makes every attempt fail."""

    def __init__(self, *, accept: int | None = None):
        self.accept = accept
        self.down = False
        self.attempts: list[list[str]] = []  # the ids of every batch it was sent
        self.batches: list[list[LifecycleEvent]] = []  # the batches it took
        self._lock = threading.Lock()

    def publish(self, events: Sequence[LifecycleEvent]) -> None:
        with self._lock:
            self.attempts.append([event.id for event in events])
            if self.down or self.accept == 0:
                raise ConnectionError("the topic cannot be reached")
            if self.accept is not None:
                self.accept -= 1
            self.batches.append(list(events))

    @property
    def received(self) -> list[LifecycleEvent]:
        return [event for batch in self.batches for event in batch]

    @property
    def received_ids(self) -> list[str]:
        return [event.id for event in self.received]


def stored_decisions(database: Path) -> list[tuple[str, str]]:
    """(event id, outcome) of every decision a SQLite promotion store holds, whatever model (or none) it names."""
    if not Path(database).exists():
        return []
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'decisions'").fetchone():
            return []
        return sorted(db.execute("SELECT event_id, outcome FROM decisions").fetchall())
    finally:
        db.close()


# --- a harness for the production use cases ----------------------------------------------------------


def registry_uri(ref: ModelRef) -> str:
    return f"azureml://registries/shared/models/{ref.name}/versions/{ref.version}"


class Production:
    """The approval workflow, the deployment worker and rollback over one store, one registry, one deployer and
    one clock, so a test reads as the scenario it plays."""

    def __init__(
        self,
        *,
        store: Any,
        registry: FakeRegistry,
        deployer: FakeDeployer,
        rules: ProductionRules,
        clock: FakeClock,
        source: str = "test-app",
    ):
        self.store = store
        self.registry = registry
        self.deployer = deployer
        self.rules = rules
        self.clock = clock
        self.source = source

    def request(self, ref: ModelRef, caller: Principal, reason: str | None = "better") -> Promotion:
        promotion, _ = service.request_promotion(
            ref,
            reason=reason,
            caller=caller,
            registry=self.registry,
            store=self.store,
            rules=self.rules,
            source=self.source,
            clock=self.clock,
        )
        return promotion

    def approve(self, promotion_id: str, caller: Principal, comment: str | None = "ok") -> Promotion:
        return service.approve(
            promotion_id,
            caller=caller,
            comment=comment,
            rules=self.rules,
            store=self.store,
            registry=self.registry,
            source=self.source,
            clock=self.clock,
        )

    def reject(self, promotion_id: str, caller: Principal, comment: str = "not yet") -> Promotion:
        return service.reject(
            promotion_id,
            caller=caller,
            comment=comment,
            rules=self.rules,
            store=self.store,
            source=self.source,
            clock=self.clock,
        )

    def deploy(self, promotion_id: str) -> Promotion:
        """The deployment job for one promotion, as the queue trigger runs it."""
        return service.deploy(
            promotion_id,
            store=self.store,
            registry=self.registry,
            deployer=self.deployer,
            rules=self.rules,
            registry_model_uri=registry_uri,
            source=self.source,
            clock=self.clock,
        )

    def advance(self) -> Any:
        """One run of the advance_deployments timer."""
        return service.advance_deployments(
            store=self.store,
            registry=self.registry,
            deployer=self.deployer,
            rules=self.rules,
            registry_model_uri=registry_uri,
            source=self.source,
            clock=self.clock,
        )

    def rollback(self, promotion_id: str, caller: Principal, comment: str = "errors went up") -> Promotion:
        return service.rollback(
            promotion_id,
            caller=caller,
            comment=comment,
            rules=self.rules,
            store=self.store,
            deployer=self.deployer,
            source=self.source,
            clock=self.clock,
        )

    def approved(self, ref: ModelRef, requester: Principal, *approvers: Principal) -> Promotion:
        promotion = self.request(ref, requester)
        for approver in approvers:
            promotion = self.approve(promotion.id, approver)
        return promotion

    def deployed(self, ref: ModelRef, requester: Principal, *approvers: Principal) -> Promotion:
        """Requested, approved and deployed, its job run until it has finished (the deployer must not fail)."""
        promotion = self.approved(ref, requester, *approvers)
        for _ in range(20):
            promotion = self.deploy(promotion.id)
            if promotion.state is not State.DEPLOYING:
                break
        return promotion

    def events(self, promotion_id: str | None = None) -> list[LifecycleEvent]:
        return [
            event
            for event in self.store.events()
            if promotion_id is None or event.data.get("promotion_id") == promotion_id
        ]

    def event_types(self, promotion_id: str | None = None) -> list[str]:
        return [event.type.value.removeprefix("ModelPromotion.") for event in self.events(promotion_id)]


def at_once(action: Callable[[Any], Any], inputs: Sequence[Any]) -> tuple[list[Any], list[Exception]]:
    """Run `action` for every input on its own thread, all released together; what they returned, and what the
    service refused (Conflict, ConcurrentChange). Anything else fails the test through the thread's error."""
    barrier = threading.Barrier(len(inputs))
    answers: list[Any] = []
    refused: list[Exception] = []

    def run(item: Any) -> None:
        barrier.wait()
        try:
            answers.append(action(item))
        except (service.Conflict, service.ConcurrentChange) as error:
            refused.append(error)

    threads = [threading.Thread(target=run, args=(item,)) for item in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, refused
