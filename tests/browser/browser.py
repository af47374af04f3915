"""Headless Chromium from Debian, driven by Selenium through Debian's chromedriver: what the browser tests and
`make screenshot` share. Selenium Manager never runs (the driver's path is given), so nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("PROMOTION_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PROMOTION_CHROMEDRIVER", "/usr/bin/chromedriver"))
# Without the background-networking flags Chromium keeps calling hosts a closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def missing() -> str | None:
    """Why the browser cannot start here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} is missing: the console's browser tests need Debian's {package} (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


def chromium(profile: Path, *, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium with an empty profile in `profile`, logging the page's console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


def script_errors(driver: Any) -> list[str]:
    """What the page's JavaScript threw or logged as an error. Refusals the API answers (4xx) are logged by
    Chromium as network errors: those are expected here and the page shows them itself."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and entry.get("source") != "network"
    ]


def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON to the served API as a script would (no Origin, no Sec-Fetch-Site) and return its answer."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{base}/api/{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def deploy_through_api(served: Any, version: str, requester: Any, approvers: tuple[Any, ...], reason: str) -> str:
    """Ask for production sharing of taxi-fare:`version` and approve it, through the served API; returns the id."""
    served.identity = requester
    body = {"model_name": "taxi-fare", "model_version": version, "reason": reason}
    promotion_id = post(served.url, "promotions", body)["id"]
    for approver in approvers:
        served.identity = approver
        post(served.url, f"promotions/{promotion_id}/approve", {"comment": "metrics reviewed"})
    assert served.wait_idle(), "the deployment job did not finish"
    return promotion_id
