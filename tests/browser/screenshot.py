"""`make screenshot`: docs/console.png, made by the browser code the tests use, of a promotion an approver is
about to decide (one of two approvals given, the previous version live in production).

    python -m tests.browser.screenshot docs/console.png
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from promotion.domain import ModelRef


def main(target: Path) -> int:
    from tests.browser import browser

    reason = browser.missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="console-screenshot-") as folder:
        root = Path(folder)
        policy = json.loads((Path(__file__).resolve().parents[2] / "promotion-policy.json").read_text())
        policy["production"]["required_approvals"] = 2
        (root / "policy.json").write_text(json.dumps(policy))
        os.environ.update(
            PROMOTION_BACKEND="local",
            PROMOTION_STATE_STORE="sqlite",
            PROMOTION_LOCAL_ROOT=str(root / "local"),
            PROMOTION_POLICY_FILE=str(root / "policy.json"),
            PROMOTION_TRUST_IDENTITY_HEADERS="true",
        )
        from promotion import wiring
        from promotion.cli.serve import Identity, LocalApp
        from tests.functions.conftest import FUNCTIONS, share

        wiring.reset()
        served = LocalApp(FUNCTIONS, port=0).start()
        alice = Identity("alice@contoso.com", ("Promotion.Approver",))
        erin = Identity("erin@contoso.com", ("Promotion.Approver",))
        dave = Identity("dave@contoso.com", ("Promotion.Approver",))
        try:
            share(wiring, ModelRef("taxi-fare", "1"))
            browser.deploy_through_api(served, "1", alice, (erin, dave), "first release")
            share(wiring, ModelRef("taxi-fare", "2"))
            promotion_id = browser.deploy_through_api(served, "2", alice, (erin,), "better MAE on the March data")
            served.identity = dave
            driver = browser.chromium(root / "profile", width=1280, height=1500)
            try:
                driver.get(f"{served.url}/api/console?promotion={promotion_id}")
                from selenium.webdriver.support.ui import WebDriverWait

                WebDriverWait(driver, 15).until(
                    lambda d: d.execute_script(
                        "return !document.body.hasAttribute('aria-busy') && !!document.querySelector('#production')"
                    )
                )
                errors = browser.script_errors(driver)
                if errors:
                    print(f"error: the page's JavaScript failed: {errors}", file=sys.stderr)
                    return 1
                target.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(target))
            finally:
                driver.quit()
        finally:
            served.stop()
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png")))
