"""The pages at /ui/ in a real headless Chromium against the end-to-end app (issue 21): the
distribution's `chromium`, driven by Selenium through the distribution's `chromedriver` at its
own path (Selenium's driver manager would need the network). `make test` installs both
(scripts/setup_browser.sh); without them these tests fail, saying so, and are never skipped.

The module switches keys on (a client key for the arena page, the admin key for the others)
and off again. Screenshots go to reports/screenshots/; axe-core (fetched by setup from the npm
registry) checks each page in both themes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve.auth import hash_key
from tests.browser import axe_violations, by_id, chromium, serious, shot, wait
from tests.e2e.conftest import ADMIN_KEY, ADMIN_KEY_ENV, EXPERIMENTS, App

CLIENT_KEY = "sk-e2e-ui-client-3d9f0a7c61b24e58"
KEYED = {
    "experiments": EXPERIMENTS,
    "auth": {
        "keys": [
            {"name": "e2e-ui-client", "sha256": hash_key(CLIENT_KEY)},
            {"name": "e2e-admin", "env": ADMIN_KEY_ENV, "role": "admin"},
        ]
    },
}
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'


@pytest.fixture(scope="module")
def keyed(app: App) -> Iterator[App]:
    with app.gateway_config(KEYED) as configured:
        yield configured


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def open_page(driver: Any, app: App, page: str, key: str) -> None:
    driver.get(f"{app.base_url}/ui/{page}")
    field = by_id(driver, "api-key")
    field.clear()
    field.send_keys(key)
    driver.execute_script("document.getElementById('key-form').requestSubmit()")


def message(driver: Any) -> str:
    return by_id(driver, "message").text


def vote_enabled(driver: Any) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "[data-vote='a']").is_enabled()


def battles(app: App, rater: str) -> int:
    query = "SELECT COUNT(*) FROM battles WHERE voter = ?"
    return app.db().execute(query, (rater,)).fetchone()[0]


def arena_ready(driver: Any, app: App, rater: str) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(driver, app, "", CLIENT_KEY)
    wait(driver, lambda d: "tiny-arena" in by_id(d, "experiment").text, "the arena list")
    Select(by_id(driver, "experiment")).select_by_value("tiny-arena")
    by_id(driver, "rater").clear()
    by_id(driver, "rater").send_keys(rater)


def battle(driver: Any, prompt: str) -> None:
    by_id(driver, "prompt").send_keys(prompt)
    by_id(driver, "send").click()
    wait(driver, vote_enabled, "an answer to vote on")


def test_a_rater_completes_three_battles_by_clicking(keyed: App, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    rater = f"ui-rater-{uuid.uuid4().hex[:8]}"
    arena_ready(browser, keyed, rater)
    reveals, started = [], time.monotonic()
    for i, (prompt, choice) in enumerate((("Hi", "a"), ("Why?", "b"), ("Thanks", "tie"))):
        battle(browser, prompt)
        if i == 1:  # another battle for the same message, in place of this one
            by_id(browser, "regenerate").click()
            wait(browser, lambda d: battles(keyed, rater) == 3 and vote_enabled(d), "a new battle")
        shot(browser, f"arena-battle-{i + 1}-answers")
        browser.find_element(By.CSS_SELECTOR, f"[data-vote='{choice}']").click()
        wait(browser, lambda d: by_id(d, "reveal").text.startswith("A was"), "the reveal")
        reveals.append(by_id(browser, "reveal").text)
        shot(browser, f"arena-battle-{i + 1}-revealed")
    seconds = time.monotonic() - started
    for text in reveals:
        assert {text.split()[2].rstrip(";"), text.split()[5].rstrip(".")} <= {"tiny-a", "tiny-b"}
    turns = browser.find_elements(By.CSS_SELECTOR, "#turns li")
    assert len(turns) == 6  # three prompts, each with the answer the rater preferred
    rows = (
        keyed.db()
        .execute(
            "SELECT f.value FROM feedback f JOIN battles b ON b.battle_id = f.battle_id "
            "WHERE f.kind = 'vote' AND b.voter = ? ORDER BY f.ts",
            (rater,),
        )
        .fetchall()
    )
    assert [row[0] for row in rows] == ["a", "b", "tie"] and battles(keyed, rater) == 4
    regenerated = keyed.db().execute(
        "SELECT COUNT(*) FROM feedback f JOIN completions c USING (completion_id) "
        "WHERE f.kind = 'regenerate' AND c.unit = ?",
        (rater,),
    )
    assert regenerated.fetchone()[0] == 2  # both answers of the battle left unvoted
    print(f"three battles by clicking took {seconds:.1f} s")


def test_a_battle_by_keyboard_alone(keyed: App, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    rater = f"ui-rater-{uuid.uuid4().hex[:8]}"
    arena_ready(browser, keyed, rater)
    by_id(browser, "prompt").send_keys("Hello", Keys.CONTROL, Keys.ENTER)
    wait(browser, vote_enabled, "an answer to vote on")
    assert browser.switch_to.active_element.get_attribute("data-vote") == "a"  # focus moved on
    ActionChains(browser).send_keys("2").perform()
    wait(browser, lambda d: by_id(d, "reveal").text.startswith("A was"), "the reveal")
    ActionChains(browser).send_keys("n").perform()
    wait(browser, lambda d: d.switch_to.active_element.get_attribute("id") == "prompt", "focus")
    assert by_id(browser, "reveal").text == "" and by_id(browser, "turns").text == ""
    votes = keyed.db().execute(
        "SELECT f.value FROM feedback f JOIN battles b ON b.battle_id = f.battle_id "
        "WHERE f.kind = 'vote' AND b.voter = ?",
        (rater,),
    )
    assert [row[0] for row in votes] == ["b"]


def test_a_wrong_key_shows_a_clear_message(keyed: App, browser: Any) -> None:
    open_page(browser, keyed, "", "sk-not-a-key")
    wait(browser, lambda d: "refused the key" in message(d), "the refusal")
    assert "401" in message(browser) and "Enter a client key above" in message(browser)
    shot(browser, "arena-wrong-key")
    open_page(browser, keyed, "report.html?experiment=tiny-arena", CLIENT_KEY)
    wait(browser, lambda d: "refused the key" in message(d), "the report's refusal")
    assert "403" in message(browser) and "admin key" in message(browser)
    shot(browser, "report-client-key")


def test_the_experiments_and_report_pages_show_the_listing_and_the_leaderboard(
    keyed: App, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, keyed, "experiments.html", ADMIN_KEY)
    wait(browser, lambda d: "tiny-arena" in by_id(d, "experiments").text, "the listing")
    listed = by_id(browser, "experiments").text
    assert all(e["name"] in listed for e in EXPERIMENTS)
    shot(browser, "experiments")
    open_page(browser, keyed, "report.html?experiment=tiny-arena", ADMIN_KEY)
    wait(browser, lambda d: "Leaderboard" in by_id(d, "report").text, "the leaderboard")
    report = by_id(browser, "report").text
    assert "Verdict:" in report and "tiny-a" in report and "tiny-b" in report
    assert browser.find_elements(By.CSS_SELECTOR, "#report svg.chart")
    shot(browser, "report-tiny-arena")
    # An A/B report: lift per metric and the sequential p-value over time.
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    for i in range(6):
        user = f"ui-ab-{uuid.uuid4().hex[:8]}"
        answer = httpx.post(
            f"{keyed.base_url}/v1/chat/completions",
            json={
                "model": "tiny-ab",
                "user": user,
                "messages": [{"role": "user", "content": "Hi"}],
            },
            headers=headers,
            timeout=60,
        ).json()
        thumbs = {
            "kind": "thumbs",
            "completion_id": answer["id"],
            "value": "up" if i % 2 else "down",
        }
        httpx.post(
            f"{keyed.base_url}/v1/feedback",
            json={**thumbs, "user": user, "idempotency_key": f"t-{user}"},
            headers=headers,
            timeout=30,
        ).raise_for_status()
    open_page(browser, keyed, "report.html?experiment=tiny-ab", ADMIN_KEY)
    drawn = lambda d: "Sequential p-value over time" in by_id(d, "report").text  # noqa: E731
    wait(browser, drawn, "the A/B report")
    report = by_id(browser, "report").text  # a report on screen stays until a newer one is drawn
    assert "thumbs_up_rate" in report and "Lift per metric" in report
    shot(browser, "report-tiny-ab")


def test_model_output_and_prompts_are_shown_as_text(keyed: App, browser: Any) -> None:
    arena_ready(browser, keyed, f"ui-rater-{uuid.uuid4().hex[:8]}")
    battle(browser, MARKUP)  # a real battle: the prompt comes back in the conversation
    browser.find_element("css selector", "[data-vote='a']").click()
    wait(browser, lambda d: by_id(d, "reveal").text.startswith("A was"), "the reveal")
    first_turn = browser.find_element("css selector", "#turns li").text
    assert MARKUP in first_turn
    # An answer with markup and script: the stream the gateway would send, fed to the page.
    browser.execute_script(
        """
        const markup = arguments[0];
        const real = window.fetch;
        window.fetch = async (url, init) => {
          if (!String(url).includes('/v1/chat/completions')) return real(url, init);
          const chunk = (index) => 'data: ' + JSON.stringify({id: 'battle-x', choices:
            [{index, delta: {content: markup}}]}) + '\\n\\n';
          return new Response(chunk(0) + chunk(1) + 'data: [DONE]\\n\\n', {headers:
            {'content-type': 'text/event-stream', 'x-battle-id': 'battle-x'}});
        };
        """,
        MARKUP,
    )
    battle(browser, "Show me markup")
    for side in ("answer-a", "answer-b"):
        assert by_id(browser, side).text == MARKUP
        inside = browser.execute_script(
            "return document.getElementById(arguments[0]).querySelectorAll('*').length", side
        )
        assert inside == 0  # text, no element made from it
    assert browser.execute_script("return window.__pwned === undefined")
    shot(browser, "arena-markup-as-text")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_passes_axe_without_serious_findings(
    keyed: App, browser: Any, theme: str
) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": theme}]},
    )
    found = {}
    try:
        arena_ready(browser, keyed, f"ui-rater-{uuid.uuid4().hex[:8]}")
        battle(browser, "Hello")
        found["arena"] = axe_violations(browser)
        shot(browser, f"axe-arena-{theme}")
        open_page(browser, keyed, "experiments.html", ADMIN_KEY)
        wait(browser, lambda d: "tiny-arena" in by_id(d, "experiments").text, "the listing")
        found["experiments"] = axe_violations(browser)
        open_page(browser, keyed, "report.html?experiment=tiny-arena", ADMIN_KEY)
        wait(browser, lambda d: "Leaderboard" in by_id(d, "report").text, "the report")
        found["report"] = axe_violations(browser)
        shot(browser, f"axe-report-{theme}")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    bad = {page: serious(violations) for page, violations in found.items()}
    assert bad == {"arena": [], "experiments": [], "report": []}, json.dumps(bad, indent=1)
