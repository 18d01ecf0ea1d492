"""The console end to end in a real headless browser (Debian's chromium, driven by
Playwright): an analyst logs in, opens the GCAP rule, adds a term, watches the backtest
change, saves (a git commit and an audit entry), and the next poll of a loopback feed
alerts on an item only the new term catches.

Skipped when no chromium is installed, except under CI (POLICYBOT_REQUIRE_BROWSER=1, set by
.ci/run, which installs it). With POLICYBOT_SCREENSHOTS=DIR, the editor and the alerts page
are saved there as PNG files (how docs/console-*.png are made)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from consolekit import ITEMS, NEW_TERM, git_run, poll, rules_dir_for, served_feed, set_env
from feedserver import FeedServer, Item, rss

from bot.config import load_settings
from bot.web.auth import hash_password
from bot.web.server import serving_in_thread

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

PASSWORD = "a passphrase for ana"


def _chromium() -> str | None:
    for candidate in (os.environ.get("POLICYBOT_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    if executable is None:
        if os.environ.get("POLICYBOT_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium found, and POLICYBOT_REQUIRE_BROWSER=1 "
                        "(apt-get install chromium, or set POLICYBOT_CHROMIUM)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    with served_feed() as server:
        yield server


@pytest.fixture
def console_url(tmp_path: Path, feed: FeedServer, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[str]:
    rules = rules_dir_for(tmp_path, feed.url("/news.xml"))
    set_env(monkeypatch, rules, f"sqlite:///{tmp_path / 'bot.db'}")
    monkeypatch.setenv("POLICYBOT_WEB_USERS", f"ana:editor:{hash_password(PASSWORD)}")
    poll()
    with serving_in_thread(load_settings(), "127.0.0.1:0") as web:
        yield web.url


# Select the added term and scroll the editor to it (for the screenshot, and as a user would).
_SHOW_TERM = """(el, term) => {
  const at = el.value.indexOf(term);
  el.focus();
  el.setSelectionRange(at, at + term.length);
  const line = el.value.slice(0, at).split("\\n").length;
  el.scrollTop = Math.max(0, (line - 12) * parseFloat(getComputedStyle(el).lineHeight));
  el.dispatchEvent(new Event("scroll"));
}"""


def _shoot(page: Page, name: str) -> None:
    where = os.environ.get("POLICYBOT_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / name), full_page=False)


def test_an_analyst_edits_a_rule_in_the_browser_and_the_next_poll_uses_it(
        browser: Browser, console_url: str, feed: FeedServer) -> None:
    rules = load_settings().rules_dir
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{console_url}/rules")
    expect(page).to_have_url(f"{console_url}/login?next=/rules")
    page.get_by_label("User").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{console_url}/rules")
    expect(page.get_by_test_id("user")).to_have_text("ana")

    page.get_by_role("link", name="gcap", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("gcap")
    expect(page.get_by_test_id("matched")).to_have_text("2")
    expect(page.get_by_test_id("gained")).to_have_text("+0 gained")

    editor = page.locator("#yaml")
    text = editor.input_value()
    marker = "    - {term: GIGO, case: sensitive}\n"
    assert marker in text
    editor.fill(text.replace(marker, f"{marker}    - {NEW_TERM}\n"))
    # The preview follows the typing (debounced, fetched): the numbers change on their own.
    expect(page.get_by_test_id("matched")).to_have_text("3")
    expect(page.get_by_test_id("gained")).to_have_text("+1 gained")
    expect(page.locator(".backtest-rows tr.gained")).to_contain_text(f"国際機関{NEW_TERM}")
    expect(page.locator(".preview-body")).to_have_attribute("data-tests", "pass")
    editor.evaluate(_SHOW_TERM, NEW_TERM)
    _shoot(page, "console-editor.png")

    page.get_by_label("Why (the commit message)").fill("GIGO by its Japanese name, ジャイゴ")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("gcap saved; committed")
    expect(page.get_by_test_id("history")).to_contain_text("ana")
    expect(page.get_by_test_id("history")).to_contain_text("GIGO by its Japanese name")
    assert NEW_TERM in (rules / "gcap.yaml").read_text("utf-8")
    log = git_run(rules, "log", "-1", "--format=%an|%s")
    assert log.strip() == "ana|GIGO by its Japanese name, ジャイゴ"

    # The feed publishes an item only the new term catches; the next poll alerts on it.
    fresh = Item("ジャイゴ、次の会合を東京で", guid="jigo-2", link="https://example.org/jigo-2",
                 description="条約に基づく国際機関ジャイゴが東京で会合を開く。",
                 published=datetime.now(UTC), language="ja")
    feed.serve("/news.xml", rss([fresh, *ITEMS]))
    poll()
    page.get_by_role("link", name="Alerts").click()
    row = page.locator("tr.alert-row").first
    expect(row).to_contain_text("次の会合を東京で")
    expect(row.locator("mark").first).to_have_text(NEW_TERM)
    expect(row.locator(".rules")).to_contain_text("gcap")
    _shoot(page, "console-alerts.png")
    assert errors == []
    context.close()


def test_a_wrong_password_is_refused_in_the_browser(browser: Browser, console_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    page = browser.new_page()
    page.goto(f"{console_url}/rules/osa-recipients")
    page.get_by_label("User").fill("ana")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("unknown user or wrong password")
    page.close()
