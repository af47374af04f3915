"""Fixtures the service tests share: a clock the test moves, and the real SQLite store in a temporary folder."""

import pytest

from promotion.adapters.sqlite import SqlitePromotionStore
from tests.unit.fakes import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path):
    return SqlitePromotionStore(tmp_path / "p.sqlite3")
