"""The web console's pages and actions, through Starlette's test client, against entries a
real poll of a loopback feed stored (SQLite and PostgreSQL), and a rules directory in git."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from consolekit import (
    NEW_TERM,
    csrf,
    form_value,
    git_run,
    poll,
    rules_dir_for,
    served_feed,
    set_env,
)
from feedserver import FeedServer, Item, rss
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bot.cli import app as cli
from bot.config import load_settings
from bot.errors import ConfigError
from bot.store import make_engine
from bot.store.audit import AuditLog
from bot.web import create_app
from bot.web.auth import hash_password
from bot.web.server import make_server

PASSWORDS = {"ana": "correct horse battery", "rex": "reader's own password"}
HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}
USERS = f"ana:editor:{HASHES['ana']}\nrex:reader:{HASHES['rex']}"


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    with served_feed() as server:
        yield server


@pytest.fixture
def rules(tmp_path: Path, feed: FeedServer) -> Path:
    return rules_dir_for(tmp_path, feed.url("/news.xml"))


@pytest.fixture
def polled(rules: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """SQLite with one poll stored: the quick setup for most tests."""
    set_env(monkeypatch, rules, f"sqlite:///{tmp_path / 'bot.db'}")
    poll()
    return rules


_clients: list[TestClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().__exit__(None, None, None)


def client(**kwargs: bool) -> TestClient:
    """A browser session on a new console; its lifespan (and database pool) ends with the test."""
    c = TestClient(create_app(load_settings(), **kwargs), follow_redirects=False)
    c.__enter__()
    _clients.append(c)
    return c


def login(c: TestClient, name: str) -> None:
    page = c.get("/login")
    assert page.status_code == 200
    done = c.post("/login", data={"username": name, "password": PASSWORDS[name],
                                  "csrf_token": csrf(page.text), "next": "/rules"})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/rules"


def editor_form(c: TestClient, rule_id: str) -> tuple[str, str, str]:
    page = c.get(f"/rules/{rule_id}")
    assert page.status_code == 200, page.text
    text = re.search(r'<textarea name="yaml"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert text
    return csrf(page.text), form_value(page.text, "version"), html.unescape(text.group(1))


# --- who may do what ----------------------------------------------------------------------


def _routes(method: str) -> list[str]:
    app = create_app(load_settings(), migrate=False)
    paths = []
    for route in app.routes:
        if isinstance(route, Route) and route.methods and method in route.methods:
            paths.append(route.path.replace("{rule_id}", "gcap").replace(
                "{entry_id:int}", "1").replace("{name}", "weekly"))
    return paths


def test_no_page_answers_without_a_user_when_logins_are_configured(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    c = client()
    pages = _routes("GET")
    assert {"/alerts", "/rules", "/rules/gcap", "/feeds", "/digests"} <= set(pages)
    for path in pages:
        if path == "/login":
            continue
        answer = c.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next="), path
    for path in _routes("POST"):
        if path == "/login":
            continue
        assert c.post(path, data={}).status_code == 401, path
    assert c.get("/static/console.css").status_code == 200


def test_login_checks_the_password_and_starts_a_new_session(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    c = client()
    page = c.get("/login?next=/rules")
    before = c.cookies.get("policybot_console")
    wrong = c.post("/login", data={"username": "ana", "password": "nope",
                                   "csrf_token": csrf(page.text), "next": "/rules"})
    assert wrong.status_code == 401
    assert "unknown user or wrong password" in wrong.text
    unknown = c.post("/login", data={"username": "eve", "password": "x",
                                     "csrf_token": csrf(page.text)})
    assert unknown.status_code == 401
    login(c, "ana")
    assert c.cookies.get("policybot_console") != before  # no session fixation
    rules = c.get("/rules")
    assert rules.status_code == 200
    assert 'data-testid="user">ana<' in rules.text
    out = c.post("/logout", data={"csrf_token": csrf(rules.text)})
    assert out.status_code == 303
    assert c.get("/rules").status_code == 303


def test_login_sends_people_back_to_this_site_only(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    c = client()
    page = c.get("/login")
    done = c.post("/login", data={"username": "rex", "password": PASSWORDS["rex"],
                                  "csrf_token": csrf(page.text), "next": "//evil.example/x"})
    assert done.headers["location"] == "/"


def test_every_form_post_needs_the_sessions_csrf_token(polled: Path) -> None:
    c = client()  # local mode: the one user is an editor
    page = c.get("/rules")
    token = csrf(page.text)
    gcap = (polled / "gcap.yaml").read_text("utf-8")
    for path in _routes("POST"):
        missing = c.post(path, data={"yaml": "x", "confirm": "gcap"})
        assert missing.status_code == 403, path
        assert "security token" in missing.text
        wrong = c.post(path, data={"csrf_token": token[::-1], "confirm": "gcap"})
        assert wrong.status_code == 403, path
        other = client()
        stolen = other.post(path, data={"csrf_token": token})  # another session
        assert stolen.status_code == 403, path
    assert (polled / "gcap.yaml").read_text("utf-8") == gcap
    ok = c.post("/rules/gcap/preview", data={"csrf_token": token, "yaml": gcap})
    assert ok.status_code == 200
    by_header = c.post("/rules/gcap/preview", data={"yaml": gcap},
                       headers={"X-CSRF-Token": token})
    assert by_header.status_code == 200


def test_a_reader_can_look_and_preview_but_not_change_anything(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    c = client()
    login(c, "rex")
    token, version, text = editor_form(c, "gcap")
    assert "readonly" in c.get("/rules/gcap").text
    assert c.post("/rules/gcap/preview", data={"csrf_token": token, "yaml": text}
                  ).status_code == 200
    edited = text.replace("  tempest: [Tempest,", "  tempest: [Tempest, Tempeste,")
    for path, data in [
        ("/rules/gcap/save", {"yaml": edited, "version": version}),
        ("/rules/gcap/enabled", {"enabled": "false", "version": version}),
        ("/rules/gcap/delete", {"confirm": "gcap", "version": version}),
        ("/rules/new", {"id": "mine"}),
        ("/feeds/add", {"name": "x", "url": "https://example.org/x.xml"}),
    ]:
        refused = c.post(path, data={"csrf_token": token, **data})
        assert refused.status_code == 403, path
        assert "may read but not change" in refused.text
    assert (polled / "gcap.yaml").read_text("utf-8") == text
    assert c.get("/rules/new").status_code == 403


def test_behind_a_proxy_the_header_names_the_user_and_the_editors_are_listed(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USER_HEADER", "X-Forwarded-Email")
    monkeypatch.setenv("POLICYBOT_WEB_EDITORS", "ana@example.org")
    c = client()
    assert c.get("/rules").status_code == 401  # nothing came through the proxy
    ana = c.get("/rules", headers={"X-Forwarded-Email": "ana@example.org"})
    assert ana.status_code == 200 and "editor" in ana.text
    bob = c.get("/rules/gcap", headers={"X-Forwarded-Email": "bob@example.org"})
    assert bob.status_code == 200 and "readonly" in bob.text


def test_the_console_refuses_to_serve_beyond_loopback_without_authentication(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="refusing to serve the console on 0.0.0.0"):
        make_server(load_settings(), "0.0.0.0:0")
    result = CliRunner().invoke(cli, ["web", "--bind", "0.0.0.0:0"])
    assert result.exit_code != 0
    assert "without authentication" in result.output
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    server = make_server(load_settings(), "0.0.0.0:0")  # with logins it may
    server.sock.close()
    monkeypatch.setenv("POLICYBOT_WEB_USERS", "ana:admin:$argon2id$x")
    with pytest.raises(ConfigError, match="role must be reader or editor"):
        load_and_create()


def load_and_create() -> None:
    create_app(load_settings(), migrate=False)


def test_session_cookies_are_signed_lax_and_secure_beyond_loopback(
        polled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    monkeypatch.setenv("POLICYBOT_WEB_SECRET", "s" * 40)
    c = client(secure_cookies=True)
    answer = c.get("/login")
    cookie = answer.headers["set-cookie"].lower()
    assert "samesite=lax" in cookie and "secure" in cookie and "httponly" in cookie
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"


def test_hash_password_prints_a_hash_the_login_accepts() -> None:
    result = CliRunner().invoke(cli, ["web", "hash-password"],
                                input="a long enough pw\na long enough pw\n")
    assert result.exit_code == 0, result.output
    hashed = result.output.strip().splitlines()[-1]
    assert hashed.startswith("$argon2id$")
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(hashed, "a long enough pw")


# --- alerts -------------------------------------------------------------------------------


@pytest.fixture
def polled_db(rules: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> str:
    set_env(monkeypatch, rules, db_url)
    poll()
    return db_url


def test_alerts_lists_matches_newest_first_with_escaped_highlights(polled_db: str) -> None:
    c = client()
    page = c.get("/alerts")
    assert page.status_code == 200
    titles = re.findall(r'class="title" href="/entries/\d+">(.*?)</a>', page.text, re.S)
    assert len(titles) == 3  # GCAP, OSA, the hostile one; not JIGO, not football
    assert "&lt;script&gt;" in titles[0]  # newest first; feed text never markup
    assert "<script>" not in page.text
    assert 'href="javascript:' not in page.text
    assert "<mark>GCAP</mark>" in titles[2]
    assert "Reshuffle at the club" not in page.text
    assert "osa-recipients" in page.text and "gcap" in page.text


def test_alerts_filter_by_rule_feed_severity_and_date(polled: Path) -> None:
    c = client()
    only_osa = c.get("/alerts?rule=osa-recipients").text
    assert "to fund coastal" in only_osa and "GCAP treaty" not in only_osa
    assert "No matches" in c.get("/alerts?feed=elsewhere").text
    osa = polled / "osa-recipients.yaml"
    osa.write_text(osa.read_text("utf-8").replace("severity: high", "severity: medium"), "utf-8")
    high = c.get("/alerts?severity=high").text
    assert "treaty milestone" in high and "to fund coastal" not in high
    medium = c.get("/alerts?severity=medium").text
    assert "treaty milestone" not in medium and "to fund coastal" in medium
    assert "No matches" in c.get("/alerts?since=2001-01-01&until=2001-01-02").text
    assert c.get("/alerts?since=yesterday").status_code == 400


def test_an_entry_page_explains_each_rule_that_matched(polled: Path) -> None:
    c = client()
    alerts = c.get("/alerts?rule=gcap").text
    entry_id = re.findall(r'href="/entries/(\d+)"', alerts)[-1]
    page = c.get(f"/entries/{entry_id}")
    assert page.status_code == 200
    assert 'id="rule-gcap"' in page.text and "MATCH" in page.text
    assert "✓" in page.text and "found GCAP" in page.text
    other = c.get(f"/entries/{entry_id}?rule=reshuffles").text
    assert 'id="rule-reshuffles"' in other and "NO MATCH now" in other
    assert c.get("/entries/999999").status_code == 404


# --- rules --------------------------------------------------------------------------------


def test_rules_page_shows_status_counts_tests_and_load_errors(polled: Path) -> None:
    c = client()
    page = c.get("/rules").text
    row = re.search(r'<tr class="rule-row" data-rule="gcap">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert "stable" in cells[1] and "high" in cells[2] and "defence-industry-desk" in cells[3]
    assert cells[4].strip() == "2" and cells[5].strip() == "2"  # matches in 7 and 30 days
    assert "ago" in cells[6] and "pass" in cells[7]
    (polled / "broken.yaml").write_text("id: broken\ntitle: x\nquery: GCAP GIGO\n", "utf-8")
    page = c.get("/rules").text
    assert "the running bot keeps its last good rules" in page
    assert re.search(r"<code>broken\.yaml:3:\d+: query: missing operator between GCAP and "
                     r"GIGO", page), page


def test_the_editor_preview_shows_errors_tests_and_the_backtest_as_one_types(
        polled: Path) -> None:
    c = client()
    token, _, text = editor_form(c, "gcap")
    same = c.post("/rules/gcap/preview", data={"csrf_token": token, "yaml": text}).text
    assert 'data-tests="pass"' in same
    assert re.search(r'data-testid="matched">2<', same)
    assert "+0 gained" in same and "−0 lost" in same
    edited = text.replace("    - {term: GIGO, case: sensitive}\n",
                          f"    - {{term: GIGO, case: sensitive}}\n    - {NEW_TERM}\n")
    assert edited != text
    more = c.post("/rules/gcap/preview", data={"csrf_token": token, "yaml": edited}).text
    assert re.search(r'data-testid="matched">3<', more)
    assert "+1 gained" in more and "国際機関<mark>ジャイゴ</mark>の事務局" in more
    broken = c.post("/rules/gcap/preview", data={
        "csrf_token": token, "yaml": text.replace("$gcap_names\n  OR", "$gcap_names\n  OR OR")}
    ).text
    assert 'data-valid="no"' in broken
    assert re.search(r'<b>\d+:\d+</b> ', broken)


def test_save_writes_the_file_commits_it_as_the_analyst_and_audits_it(
        polled_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_WEB_USERS", USERS)
    rules = load_settings().rules_dir
    c = client()
    login(c, "ana")
    token, version, text = editor_form(c, "gcap")
    edited = text.replace("    - {term: GIGO, case: sensitive}\n",
                          f"    - {{term: GIGO, case: sensitive}}\n    - {NEW_TERM}\n")
    saved = c.post("/rules/gcap/save", data={
        "csrf_token": token, "version": version, "yaml": edited,
        "message": "Catch GIGO by its Japanese name"})
    assert saved.status_code == 303, saved.text
    assert (rules / "gcap.yaml").read_text("utf-8") == edited
    assert not list(rules.glob(".gcap.yaml.*"))  # no temporary file left behind
    log = git_run(rules, "log", "-1", "--format=%an <%ae>|%s", "--", "gcap.yaml")
    assert log.strip() == "ana <ana@policybot.invalid>|Catch GIGO by its Japanese name"
    assert git_run(rules, "status", "--porcelain").strip() == ""
    page = c.get("/rules/gcap").text
    assert "gcap saved; committed" in page
    history = re.search(r'data-testid="history">(.*?)</ul>', page, re.S)
    assert history and "ana" in history.group(1) and "Catch GIGO" in history.group(1)
    assert f"+    - {NEW_TERM}" in history.group(1)
    engine = make_engine(polled_db)
    try:
        (entry,) = AuditLog(engine).for_subject("gcap")
    finally:
        engine.dispose()
    assert (entry.user, entry.action, entry.path) == ("ana", "save", "gcap.yaml")
    commit = git_run(rules, "rev-parse", "HEAD").strip()
    assert entry.commit == commit


def test_a_save_that_breaks_the_rule_or_its_tests_is_refused_with_the_reasons(
        polled: Path) -> None:
    c = client()
    token, version, text = editor_form(c, "gcap")
    invalid = text.replace("query: >", "quer: >")
    refused = c.post("/rules/gcap/save", data={"csrf_token": token, "version": version,
                                               "yaml": invalid})
    assert refused.status_code == 422
    assert "Not saved" in refused.text and "did you mean &#39;query&#39;" in refused.text
    # Drop the GCAP acronym: its match examples now fail.
    failing = text.replace("    - {term: GCAP, case: sensitive}\n", "")
    refused = c.post("/rules/gcap/save", data={"csrf_token": token, "version": version,
                                               "yaml": failing})
    assert refused.status_code == 422
    assert "test fails: match" in refused.text
    assert (polled / "gcap.yaml").read_text("utf-8") == text
    experimental = c.post("/rules/gcap/save", data={
        "csrf_token": token, "version": version, "yaml": failing, "experimental": "1"})
    assert experimental.status_code == 303
    saved = (polled / "gcap.yaml").read_text("utf-8")
    assert "\nstatus: experimental\n" in saved and "status: stable" not in saved
    assert "{term: GCAP, case: sensitive}" not in saved


def test_a_save_over_someone_elses_newer_save_is_refused(polled: Path) -> None:
    c = client()
    token, version, text = editor_form(c, "gcap")
    theirs = text + "# their change\n"
    (polled / "gcap.yaml").write_text(theirs, "utf-8")
    clash = c.post("/rules/gcap/save", data={"csrf_token": token, "version": version,
                                             "yaml": text + "# mine\n"})
    assert clash.status_code == 409
    assert "changed by someone else" in clash.text
    assert "# mine" in clash.text  # the analyst's text is still in the editor
    assert (polled / "gcap.yaml").read_text("utf-8") == theirs


def test_a_new_rule_starts_from_the_template_and_is_created_on_save(polled: Path) -> None:
    c = client()
    page = c.get("/rules/new")
    bad = c.post("/rules/new", data={"csrf_token": csrf(page.text), "id": "Bad Id"})
    assert bad.status_code == 422 and "not a rule id" in bad.text
    taken = c.post("/rules/new", data={"csrf_token": csrf(page.text), "id": "gcap"})
    assert taken.status_code == 409
    go = c.post("/rules/new", data={"csrf_token": csrf(page.text), "id": "jigo-watch",
                                    "title": "JIGO watch"})
    assert go.status_code == 303
    token, version, text = editor_form(c, go.headers["location"].removeprefix("/rules/"))
    assert version == "" and "id: jigo-watch" in text and 'title: "JIGO watch"' in text
    assert not (polled / "jigo-watch.yaml").exists()
    text = text.replace("    - a phrase to find", f"    - {NEW_TERM}").replace(
        "A headline the rule must catch: a phrase to find", f"国際機関{NEW_TERM}が発足")
    created = c.post("/rules/jigo-watch/save", data={"csrf_token": token, "version": "",
                                                     "yaml": text})
    assert created.status_code == 303, created.text
    assert (polled / "jigo-watch.yaml").read_text("utf-8") == text
    rules = c.get("/rules").text
    assert 'data-rule="jigo-watch"' in rules and "experimental" in rules


def test_disable_and_enable_change_one_line_and_keep_the_comments(polled: Path) -> None:
    c = client()
    token, version, text = editor_form(c, "reshuffles")
    off = c.post("/rules/reshuffles/enabled", data={"csrf_token": token, "version": version,
                                                    "enabled": "false"})
    assert off.status_code == 303
    disabled = (polled / "reshuffles.yaml").read_text("utf-8")
    assert "\nenabled: false\n" in disabled
    assert disabled.replace("enabled: false\n", "", 1) == text
    assert "disabled" in c.get("/rules").text
    token, version, _ = editor_form(c, "reshuffles")
    on = c.post("/rules/reshuffles/enabled", data={"csrf_token": token, "version": version,
                                                   "enabled": "true"})
    assert on.status_code == 303
    assert "\nenabled: true\n" in (polled / "reshuffles.yaml").read_text("utf-8")


def test_delete_asks_for_the_id_then_removes_commits_and_audits(polled: Path) -> None:
    c = client()
    confirm = c.get("/rules/reshuffles/delete")
    token, version = csrf(confirm.text), form_value(confirm.text, "version")
    wrong = c.post("/rules/reshuffles/delete", data={"csrf_token": token, "version": version,
                                                     "confirm": "gcap"})
    assert wrong.status_code == 422 and (polled / "reshuffles.yaml").exists()
    gone = c.post("/rules/reshuffles/delete", data={"csrf_token": token, "version": version,
                                                    "confirm": "reshuffles"})
    assert gone.status_code == 303
    assert not (polled / "reshuffles.yaml").exists()
    assert "Delete rule reshuffles" in git_run(polled, "log", "-1", "--format=%s")
    assert "deleted" in c.get("/rules").text
    assert "reshuffles" in re.search(r"Recent changes.*", c.get("/rules").text, re.S).group(0)


# --- feeds and digests --------------------------------------------------------------------


def test_feeds_lists_failing_feeds_first_and_adds_a_checked_feed(
        polled: Path, feed: FeedServer) -> None:
    feeds_yaml = polled / "feeds.yaml"
    feeds_yaml.write_text(feeds_yaml.read_text("utf-8") + (
        f"  - name: a-broken-one\n    url: \"{feed.url('/missing.xml')}\"\n"), "utf-8")
    feed.status("/missing.xml", 500)
    poll()
    c = client()
    page = c.get("/feeds").text
    names = re.findall(r'class="feed-row health-(\w+)" data-feed="([^"]+)"', page)
    assert names[0] == ("failing", "a-broken-one") and names[1][1] == "defence-news"
    feed.serve("/other.xml", rss([Item("GCAP partners meet in Rome", guid="r1")],
                                 title="Other news"))
    checked = c.post("/feeds/check", data={"csrf_token": csrf(page), "url": feed.url(
        "/other.xml")})
    assert checked.status_code == 200
    assert "GCAP partners meet in Rome" in checked.text and "gcap" in checked.text
    added = c.post("/feeds/add", data={"csrf_token": csrf(page), "url": feed.url(
        "/other.xml"), "name": "other-news", "tags": "uk, news", "interval": "1h"})
    assert added.status_code == 303, added.text
    text = feeds_yaml.read_text("utf-8")
    assert text.startswith("# The test's feeds\n")  # comments kept
    assert f'  - name: other-news\n    url: "{feed.url("/other.xml")}"\n' in text
    assert "Add feed other-news" in git_run(polled, "log", "-1", "--format=%s")
    clash = c.post("/feeds/add", data={"csrf_token": csrf(page), "url": feed.url(
        "/other.xml"), "name": "other-news-2"})
    assert clash.status_code == 422 and "duplicate feed url" in clash.text
    broken = c.post("/feeds/check", data={"csrf_token": csrf(page), "url": feed.url(
        "/missing.xml")})
    assert broken.status_code == 422 and "500" in broken.text


def test_digests_preview_the_mail_in_a_sandboxed_frame(polled: Path) -> None:
    c = client()
    page = c.get("/digests").text
    assert "weekly" in page
    current = c.get("/digests/weekly?period=current")
    assert current.status_code == 200
    assert 'src="/digests/weekly/html?period=current"' in current.text
    mail = c.get("/digests/weekly/html?period=current")
    assert mail.status_code == 200
    assert mail.headers["content-security-policy"].startswith("sandbox")
    assert "GCAP treaty milestone" in mail.text and "<script>" not in mail.text
    assert c.get("/digests/nope").status_code == 404
    assert c.get("/digests/weekly?period=last-tuesday").status_code == 400


# --- inside `policybot run` ---------------------------------------------------------------


def test_run_serves_the_console_and_reloads_what_it_saves(
        rules: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from test_cli import read_until

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYBOT_", "SLACK_"))}
    env.update(POLICYBOT_RULES_DIR=str(rules), POLICYBOT_DATABASE_URL=f"sqlite:///{tmp_path}/b.db",
               POLICYBOT_ALLOW_PRIVATE_ADDRESSES="true", POLICYBOT_PARSE_WORKERS="0",
               POLICYBOT_POLL_TICK_SECONDS="1", POLICYBOT_LOG_LEVEL="INFO")
    with subprocess.Popen([sys.executable, "-m", "bot", "run", "--web", "127.0.0.1:0"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            started = read_until(process.stderr, lambda line: "web console on http" in line)
            url = re.search(r"web console on (http://\S+)", started).group(1)  # type: ignore[union-attr]
            with httpx.Client(base_url=url) as web:
                editor = web.get("/rules/gcap")
                assert editor.status_code == 200
                text = html.unescape(re.search(r'<textarea name="yaml"[^>]*>(.*?)</textarea>',
                                               editor.text, re.S).group(1))  # type: ignore[union-attr]
                saved = web.post("/rules/gcap/save", data={
                    "csrf_token": csrf(editor.text), "version": form_value(editor.text, "version"),
                    "yaml": text.replace("  tempest: [Tempest,", "  tempest: [Tempest, Tempesta,"),
                    "message": "Italian spelling"})
                assert saved.status_code == 303, saved.text
            # The bot's own reload (each poll tick) takes the saved file.
            read_until(process.stderr, lambda line: "rules loaded" in line)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert "Tempesta" in (rules / "gcap.yaml").read_text("utf-8")


def test_nothing_but_the_cli_imports_the_cli() -> None:
    """DESIGN.md: the console shares the CLI's functions by calling the modules they live
    in (bot.ruletools, bot.feedinfo, bot.digest.context), never by importing bot.cli."""
    import ast

    package = Path(__file__).resolve().parent.parent / "bot"
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package.parent).as_posix()
        if relative.startswith("bot/cli/") or relative == "bot/__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{relative}: {n}" for n in names if n.split(".")[:2] == ["bot", "cli"]]
    assert offenders == []
