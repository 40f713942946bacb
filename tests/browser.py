"""A headless Chromium for the UI tests: the distribution's `chromium`, driven by Selenium
through the distribution's `chromedriver` at its own path (Selenium's driver manager would need
the network). `make test` installs both (scripts/setup_browser.sh); without them a test that
asks for the browser fails, saying what to run, and is never skipped."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "screenshots"
WAIT_S = 90


def chromium() -> Iterator[Any]:
    """A headless Chromium session, quit at the end."""
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail(
            "the UI tests need the distribution's chromium and chromedriver: run "
            "`bash scripts/setup_browser.sh` (as root, or with sudo: apt-get install chromium "
            "chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited for {what}")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def shot(driver: Any, name: str) -> Path:
    """A screenshot kept as a test artifact in reports/screenshots/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """axe-core's findings on the page as it is (fetched by setup from the npm registry)."""
    source = next((ROOT / "data" / "vendor").glob("axe-core-*/axe.min.js")).read_text()
    driver.execute_script(source)
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)}))))"
    )


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]
