"""The approver console in headless Chromium, against the app as `promotion serve` runs it on the local backend."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

import pytest

from promotion.domain import ModelRef
from tests.browser import browser
from tests.browser.conftest import ALICE, BOB, DAVE, ERIN
from tests.functions.conftest import share, use_policy

TAXI = ModelRef("taxi-fare", "1")
HOSTILE = "<img src=x onerror=alert(1)>"


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 15, what: str = "") -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page replaces what it shows on every refresh: an element read mid-way is looked up again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(
        condition, message=what
    )


def find(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def finds(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def settled(driver: Any) -> None:
    """The page finished loading what it shows (it marks itself aria-busy while it reloads)."""
    wait(driver, lambda d: find(d, "body").get_attribute("aria-busy") is None, what="the page to settle")


def open_console(driver: Any, served: Any, query: str = "") -> None:
    driver.get(f"{served.url}/api/console{query}")
    wait(driver, lambda d: find(d, "#me").text.startswith(served.identity.name), what="the page says who I am")
    settled(driver)


def notice(driver: Any, contains: str) -> str:
    wait(driver, lambda d: contains in find(d, "#notice").text, what=f"a notice saying {contains!r}")
    return find(driver, "#notice").text


def promotion_state(driver: Any, expected: str) -> None:
    wait(
        driver,
        lambda d: any(p.get_attribute("data-state") == expected for p in finds(d, "#promotion")),
        what=f"the promotion shown as {expected}",
    )


def request_in_page(driver: Any, ref: ModelRef, reason: str) -> str:
    find(driver, "#request-name").send_keys(ref.name)
    find(driver, "#request-version").send_keys(ref.version)
    find(driver, "#request-reason").send_keys(reason)
    find(driver, "#request-form button[type=submit]").click()
    wait(driver, lambda d: "promotion=" in d.current_url, what="the page to show the new promotion")
    promotion_state(driver, "pending_approval")
    settled(driver)
    return driver.current_url.split("promotion=")[1]


def decide(driver: Any, action: str, comment: str = "") -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(3):  # a timed refresh may replace the form between reading and clicking it
        settled(driver)
        try:
            box = find(driver, "#comment")
            box.clear()
            if comment:
                box.send_keys(comment)
            find(driver, f"#{action}").click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"the {action} button kept being replaced")


def deployed_before(local_app: Any, served: Any, ref: ModelRef) -> None:
    """A version already live on the endpoint, so that a rollback has somewhere to go back to."""
    share(local_app, ref)
    browser.deploy_through_api(served, ref.version, ALICE, (ERIN, DAVE), "first release")


def test_the_whole_flow_request_refused_self_approval_two_approvals_deployed_rolled_back(
    driver, served, local_app, tmp_path, monkeypatch
):
    use_policy(monkeypatch, tmp_path, required_approvals=2)
    deployed_before(local_app, served, ModelRef("taxi-fare", "1"))
    candidate = ModelRef("taxi-fare", "2")
    share(local_app, candidate)

    served.identity = ALICE
    open_console(driver, served)
    promotion_id = request_in_page(driver, candidate, "better MAE on the March data")
    assert "taxi-fare:1" in find(driver, "#production").text  # what production serves now, before approving

    decide(driver, "approve")
    assert "may not decide it" in notice(driver, "requested this promotion")  # the API's own words
    driver.save_screenshot(str(tmp_path / "1-self-approval-refused.png"))

    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    decide(driver, "approve", "metrics reviewed")
    notice(driver, "is pending approval")
    wait(driver, lambda d: "1 of 2: erin@contoso.com" in find(d, "#promotion").text)

    served.identity = DAVE
    open_console(driver, served)
    card = find(driver, f'#waiting-list [data-promotion="{promotion_id}"]')
    assert "1 of 2: erin@contoso.com" in card.text and "better MAE" in card.text and "alice@contoso.com" in card.text
    card.find_element("css selector", "a").click()
    promotion_state(driver, "pending_approval")
    decide(driver, "approve")
    notice(driver, "is approved")
    assert served.wait_idle()  # the job the approval queued, deployed at once
    find(driver, "#refresh").click()
    settled(driver)
    promotion_state(driver, "deployed")
    wait(driver, lambda d: "100% → taxi-fare:2" in find(d, "#production").text)
    driver.save_screenshot(str(tmp_path / "2-deployed.png"))

    decide(driver, "rollback")
    notice(driver, "comment: required")
    decide(driver, "rollback", "latency regression")
    promotion_state(driver, "rolled_back")
    wait(driver, lambda d: "100% → taxi-fare:1" in find(d, "#production").text)
    assert "latency regression" in find(driver, "#promotion").text
    driver.save_screenshot(str(tmp_path / "3-rolled-back.png"))


def test_rejection_needs_a_comment_and_ends_the_request(driver, served, local_app, tmp_path):
    share(local_app, TAXI)
    open_console(driver, served)
    promotion_id = request_in_page(driver, TAXI, "new features")

    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    decide(driver, "reject")
    notice(driver, "comment: required")
    decide(driver, "reject", "the March data is not representative")
    promotion_state(driver, "rejected")
    assert "erin@contoso.com" in find(driver, "#promotion").text
    assert finds(driver, "#approve") == []  # nothing left to decide
    decide_again = find(driver, "#all-table").text
    assert "rejected" in decide_again


def test_expiry_shows_time_left_then_expired(driver, served, local_app, app_clock):
    share(local_app, TAXI)
    open_console(driver, served)
    promotion_id = request_in_page(driver, TAXI, "soon")

    served.identity = ERIN
    open_console(driver, served)
    card = f'#waiting-list [data-promotion="{promotion_id}"]'
    assert "7 d 0 h left" in find(driver, card).text  # a week (approval_ttl_hours: 168), by the app's clock

    app_clock.advance(hours=170)
    open_console(driver, served, f"?promotion={promotion_id}")
    assert "expired 2 h 0 min ago" in find(driver, card).text
    decide(driver, "approve")
    notice(driver, "expired")  # the API's refusal, as it said it

    served.run_timer("advance_deployments")
    find(driver, "#refresh").click()
    settled(driver)
    promotion_state(driver, "expired")


def test_hostile_text_shows_as_text(driver, served, local_app, tmp_path):
    tags = {"stage": "candidate", "accuracy": "0.91", "notes": HOSTILE}
    share(local_app, TAXI, tags=tags, description="<script>alert('description')</script>")
    served.identity = type(ALICE)("<b>mallory</b><img src=x onerror=alert(2)>", ("Promotion.Approver",))
    open_console(driver, served)
    promotion_id = request_in_page(driver, TAXI, f"reason {HOSTILE}")
    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    decide(driver, "reject", f"comment {HOSTILE}")
    promotion_state(driver, "rejected")

    page = find(driver, "body").text
    for text in (HOSTILE, f"reason {HOSTILE}", f"comment {HOSTILE}", "<b>mallory</b>", "<script>alert('description')"):
        assert text in page
    assert finds(driver, "main img") == [] and finds(driver, "main b") == [] and finds(driver, "main script") == []
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (reading it is the check)
    driver.save_screenshot(str(tmp_path / "hostile.png"))


def test_a_post_from_another_origin_on_127_0_0_1_is_refused(driver, served, local_app, tmp_path):
    share(local_app, TAXI)
    target = f"{served.url}/api/promotions"
    # A classic cross-site forgery: a form on another port of the same host posts JSON-looking text.
    attack = (
        f'<!doctype html><form id="f" method="post" action="{target}" enctype="text/plain">'
        '<input name=\'{"model_name": "taxi-fare", "model_version": "1", "x": "\' value=\'"}\'></form>'
        "<script>document.getElementById('f').submit()</script>"
    ).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(attack)))
            self.end_headers()
            self.wfile.write(attack)

        def log_message(self, *args: Any) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        driver.get(f"http://127.0.0.1:{other.server_address[1]}/")
        wait(driver, lambda d: "cross-site request refused" in find(d, "body").text, what="the API's refusal")
        # Another port of the same host is same-site, not same-origin: the browser says so, the API refuses.
        assert "came from a 'same-site' page" in find(driver, "body").text
    finally:
        other.shutdown()
        other.server_close()
    assert local_app.store().list() == []  # nothing was requested


def test_keyboard_only_approval(driver, served, local_app):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    share(local_app, TAXI)
    open_console(driver, served)
    promotion_id = request_in_page(driver, TAXI, "keyboard")
    served.identity = ERIN
    open_console(driver, served)

    def tab_to(predicate: Callable[[Any], bool], limit: int = 60) -> Any:
        for _ in range(limit):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            focused = driver.switch_to.active_element
            if predicate(focused):
                return focused
        raise AssertionError("Tab never reached the control")

    tab_to(lambda e: e.tag_name == "a" and promotion_id in (e.get_attribute("href") or ""))
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    promotion_state(driver, "pending_approval")
    wait(driver, lambda d: d.switch_to.active_element.get_attribute("id") == "detail-title", what="focus on the view")
    tab_to(lambda e: e.get_attribute("id") == "comment")
    ActionChains(driver).send_keys("approved from the keyboard").perform()
    tab_to(lambda e: e.get_attribute("id") == "approve", limit=3)
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    notice(driver, "is approved")
    assert served.wait_idle()
    assert local_app.store().get(promotion_id).approvals[0].detail.get("comment") == "approved from the keyboard"


def test_a_360_px_phone_gets_the_whole_page_without_sideways_scrolling(driver, served, local_app, tmp_path):
    share(local_app, TAXI, tags={"stage": "candidate", "accuracy": "0.91", "notes": "x" * 300})
    open_console(driver, served)
    promotion_id = request_in_page(driver, TAXI, "a long reason " * 20)
    served.identity = ERIN
    driver.set_window_size(360, 800)
    open_console(driver, served, f"?promotion={promotion_id}")
    wait(driver, lambda d: d.execute_script("return window.innerWidth") <= 360)

    assert driver.execute_script("return document.documentElement.scrollWidth") <= 360
    assert find(driver, "#approve").is_displayed() and find(driver, "#waiting-list .card").is_displayed()
    assert find(driver, "#approve").size["width"] < 360
    driver.save_screenshot(str(tmp_path / "phone.png"))


def test_without_identity_the_page_sends_the_browser_to_sign_in_with_the_deep_link(driver, served):
    served.identity = None
    driver.get(f"{served.url}/api/console?model=taxi-fare&version=7")
    wait(driver, lambda d: "/.auth/login/aad" in d.current_url, what="the sign-in redirect")
    assert driver.current_url == (
        f"{served.url}/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fconsole%3Fmodel%3Dtaxi-fare%26version%3D7"
    )


def test_someone_who_is_not_an_approver_is_told_so(driver, served, local_app):
    share(local_app, TAXI)
    promotion_id = browser.deploy_through_api(served, "1", ALICE, (ERIN,), "for bob")
    served.identity = BOB
    open_console(driver, served, f"?promotion={promotion_id}")
    assert "may not approve" in find(driver, "#me").text
    wait(driver, lambda d: "not an approver" in find(d, "#waiting-list").text)
    assert finds(driver, "#approve") == []
    decide(driver, "rollback", "I think it is broken")
    notice(driver, "bob@contoso.com is not an approver")  # the API's own words
    promotion_state(driver, "deployed")


def test_a_decision_someone_else_made_meanwhile_is_shown_as_the_api_says(driver, served, local_app):
    share(local_app, TAXI)
    served.identity = ALICE
    promotion_id = browser.post(served.url, "promotions", {"model_name": "taxi-fare", "model_version": "1"})["id"]
    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    served.identity = DAVE
    browser.post(served.url, f"promotions/{promotion_id}/reject", {"comment": "not now"})
    served.identity = ERIN
    decide(driver, "approve")  # the page still shows it pending
    notice(driver, "is rejected; only a pending request can be decided")


def test_the_check_of_the_pages_javascript_can_fail(driver, served):
    open_console(driver, served)
    driver.execute_script("setTimeout(() => { throw new Error('a planted failure') }, 0)")
    wait(driver, lambda d: (found := browser.script_errors(d)) and "a planted failure" in found[0], timeout=5)


def test_a_tag_changed_after_the_request_is_shown_and_the_approval_still_counts(driver, served, local_app):
    from tests.functions.conftest import backend

    share(local_app, TAXI, tags={"stage": "candidate", "accuracy": "0.91"})
    promotion_id = browser.post(served.url, "promotions", {"model_name": "taxi-fare", "model_version": "1"})["id"]
    backend(local_app).registry.set_tags(TAXI, {"accuracy": "0.85", "notes": HOSTILE})

    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    changes = find(driver, "#tag-changes").text
    assert "accuracy: 0.91 → 0.85" in changes and f"notes: (not set) → {HOSTILE}" in changes
    assert finds(driver, "main img") == []
    assert find(driver, "#promotion .fingerprint code").get_attribute("title").startswith("sha256:")
    decide(driver, "approve", "the new accuracy is fine")
    notice(driver, "is approved")
    assert served.wait_idle()
    find(driver, "#refresh").click()
    settled(driver)
    promotion_state(driver, "deployed")
    history = find(driver, "#promotion table.history").text
    assert "Tags changed since the request:" in history and "accuracy: 0.91 → 0.85" in history


def test_an_archived_version_is_voided_with_the_apis_refusal(driver, served, local_app):
    from tests.functions.conftest import backend

    share(local_app, TAXI)
    promotion_id = browser.post(served.url, "promotions", {"model_name": "taxi-fare", "model_version": "1"})["id"]
    backend(local_app).registry.set_archived(TAXI)

    served.identity = ERIN
    open_console(driver, served, f"?promotion={promotion_id}")
    decide(driver, "approve")
    notice(driver, "is voided and nothing will deploy: the version was archived in the registry")
    find(driver, "#refresh").click()
    settled(driver)
    promotion_state(driver, "voided")
    panel = find(driver, "#promotion").text
    assert "Voided because" in panel and "the version was archived in the registry" in panel
    assert finds(driver, "#approve") == [] and finds(driver, "#reject") == []
    assert len(finds(driver, "#promotion table.history .differences .fingerprint")) == 2  # both fingerprints


def test_drift_caused_by_hand_is_shown_next_to_what_production_serves(driver, served, local_app):
    from promotion import service, wiring
    from tests.functions.conftest import backend

    share(local_app, TAXI)
    browser.deploy_through_api(served, "1", ALICE, (ERIN,), "first release")
    uri = "azureml://registries/r/models/taxi-fare/versions/1"
    backend(local_app).production.deploy_by_hand("taxi-fare-prod", "hotfix", uri)
    service.detect_drift(**wiring.drift_ports())

    served.identity = ERIN
    open_console(driver, served, "?model=taxi-fare&version=1")
    drift = find(driver, "#production #drift").text
    assert "unapproved model on taxi-fare-prod / hotfix since" in drift
    assert "Actual" in drift and "model: taxi-fare:1" in drift
