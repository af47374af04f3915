import pytest

from tests.azurite import azurite_connection, azurite_table_name

pytest_plugins = ["tests.fakes.fixtures"]

__all__ = ["azurite_connection", "azurite_table_name"]  # session fixtures for every test that needs Azure Storage


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/test_openapi.py checks the statuses the other tests observed, so it runs after them."""
    last = [item for item in items if item.path.name == "test_openapi.py"]
    items[:] = [item for item in items if item.path.name != "test_openapi.py"] + last


@pytest.fixture(autouse=True)
def app_clock():
    """The clock the app's functions and the CLI in this process hand every use case: a fake one, so that no test
    reads the real clock and the suite means the same on any day. Tests move it to let time pass."""
    from promotion import wiring
    from tests.unit.fakes import FakeClock

    clock = FakeClock()
    previous = wiring.use_clock(clock)
    yield clock
    wiring.use_clock(previous)
