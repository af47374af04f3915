"""The console in a real browser: `promotion serve`'s LocalApp in this process (so the app clock is the tests'
FakeClock), Debian's headless Chromium, and a check after every test that the page's JavaScript threw nothing.

Without Chromium the tests skip, saying why; with the CI variable set they fail instead, so CI cannot pass
without having run them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from promotion.cli.serve import Identity, LocalApp
from tests.browser import browser
from tests.functions.conftest import FUNCTIONS, local_app, share, use_policy

__all__ = ["local_app", "share", "use_policy"]

ALICE = Identity("alice@contoso.com", ("Promotion.Approver",))  # an approver, who asks for production sharing
ERIN = Identity("erin@contoso.com", ("Promotion.Approver",))
DAVE = Identity("dave@contoso.com", ("Promotion.Approver",))
BOB = Identity("bob@contoso.com")  # not an approver


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    reason = browser.missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the browser tests must run: {reason}")
    pytest.skip(f"the approver console is not tested in a browser here: {reason}")


@pytest.fixture
def served(local_app: Any) -> Iterator[LocalApp]:
    """The app as `promotion serve` runs it, on a free port of 127.0.0.1; switch `served.identity` to act as
    another person (as restarting it with another --as would)."""
    app = LocalApp(FUNCTIONS, port=0, identity=ALICE).start()
    yield app
    app.stop()


@pytest.fixture
def driver(chromium_ready: None, tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    chrome = browser.chromium(tmp_path / "chromium-profile")
    try:
        yield chrome
        errors = browser.script_errors(chrome)
        chrome.save_screenshot(str(tmp_path / "last.png"))
        assert errors == [], f"the page's JavaScript failed: {errors}"
    finally:
        chrome.quit()
