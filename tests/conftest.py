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


@pytest.fixture(scope="session")
def _no_local_settings_root(tmp_path_factory):
    return tmp_path_factory.mktemp("no-local-settings")


@pytest.fixture(autouse=True)
def no_developer_local_settings(monkeypatch, _no_local_settings_root):
    """The `promotion` command reads local.settings.json at the app root, as Core Tools does. A developer's own file
    in this checkout must not reach the tests that run the command in-process; a test that moves the app root
    (settings.APP_ROOT) gets the file of that root."""
    from promotion import cli, settings

    checkout = settings.APP_ROOT

    def without_the_checkouts_file(env):
        root = _no_local_settings_root if checkout == settings.APP_ROOT else None
        return settings.with_local_settings(env, root=root)

    monkeypatch.setattr(cli, "with_local_settings", without_the_checkouts_file)
