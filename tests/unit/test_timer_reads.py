"""The timers' use cases read the open work and nothing finished: with a long history in the (real SQLite) store,
each finds the same work and reads the same rows as with none."""

from datetime import timedelta

from promotion import service
from promotion.domain import LINEAGE_SOURCE_MODEL, ModelRef, ModelVersion, State
from promotion.identity import Principal
from promotion.policy import ProductionRules
from tests.contract.test_open_work import add_history
from tests.unit.fakes import FakeDeployer, FakePublisher, FakeRegistry, Production

ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")
RULES = ProductionRules(approvers=("carol@contoso.com",), job_grace_minutes=0.5, approval_ttl_hours=0.5)
REFS = [ModelRef("churn", str(version)) for version in range(1, 5)]


def costs(store, run):
    before = store.reads.snapshot()
    result = run()
    after = store.reads.snapshot()
    return result, (after[0] - before[0], after[1] - before[1])


def world(store, clock):
    registry = FakeRegistry(*(ModelVersion(ref, "mlflow_model", {LINEAGE_SOURCE_MODEL: str(ref)}) for ref in REFS))
    prod = Production(store=store, registry=registry, deployer=FakeDeployer(polls=5), rules=RULES, clock=clock)
    deploying = prod.approved(REFS[0], ALICE, CAROL)
    prod.deploy(deploying.id)  # started; the deployer needs more calls
    lost = prod.approved(REFS[1], ALICE, CAROL)  # its job never runs
    stale = prod.request(REFS[2], ALICE)
    clock.advance(minutes=40)  # the request waited past the TTL, the job past its grace
    return prod, {"deploying": deploying.id, "lost": lost.id, "stale": stale.id}


def run_timers(prod):
    return service.advance_deployments(
        store=prod.store,
        registry=prod.registry,
        deployer=prod.deployer,
        rules=RULES,
        registry_model_uri=lambda ref: f"azureml://registries/r/models/{ref.name}/versions/{ref.version}",
        source="test-app",
        clock=prod.clock,
    )


def test_advance_deployments_and_expiry_read_only_open_work(tmp_path, clock):
    from promotion.adapters.sqlite import SqlitePromotionStore

    quiet = SqlitePromotionStore(tmp_path / "quiet.sqlite3")
    busy = SqlitePromotionStore(tmp_path / "busy.sqlite3")
    add_history(busy, 150, at=clock.now - timedelta(days=1))
    reports, reads = [], []
    for store in (quiet, busy):
        store_clock = type(clock)(clock.now)
        prod, ids = world(store, store_clock)
        report, cost = costs(store, lambda prod=prod: run_timers(prod))
        reports.append(
            (report.advanced, report.expired, report.errors)
            == ({ids["deploying"]: "deploying", ids["lost"]: "deploying"}, [ids["stale"]], {})
        )
        reads.append(cost)
    assert reports == [True, True]
    assert reads[0] == reads[1]


def test_expiry_reads_pending_requests_only(store, clock):
    add_history(store, 100, at=clock.now - timedelta(days=30))  # finished long ago: well past any TTL
    _, (requests, rows) = costs(
        store, lambda: service.expire_stale_requests(rules=RULES, store=store, source="test-app", clock=clock)
    )
    assert (requests, rows) == (1, 0)


def test_copies_and_the_outbox_read_only_what_is_open(store, clock):
    add_history(store, 100, at=clock.now - timedelta(days=1))
    registry = FakeRegistry()
    run, (requests, rows) = costs(
        store, lambda: service.advance_registry_copies(registry=registry, store=store, source="s", clock=clock)
    )
    assert run == service.copies.CopyRun() and (requests, rows) == (1, 0)
    report, (requests, rows) = costs(store, lambda: service.publish_pending(store, FakePublisher(), clock=clock))
    assert report.published == 0 and (requests, rows) == (1, 0)
    assert store.open_promotions([State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING, State.ROLLING_BACK]) == []


def test_purge_decisions_forgets_decisions_older_than_the_retention(store, clock):
    add_history(store, 10, at=clock.now - timedelta(days=8))
    add_history(store, 0)
    recent = ModelRef("m0001", "1")
    assert len(store.decisions(recent)) == 2
    assert service.purge_decisions(store, retention=timedelta(days=9), clock=clock) == 0
    assert service.purge_decisions(store, retention=timedelta(days=7), clock=clock) == 20
    assert store.decisions(recent) == [] and len(store.list()) == 10  # promotions are never purged
