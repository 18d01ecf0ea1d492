"""``policybot digest …`` and the digest lines of ``status``, as a user runs them: real
subprocesses, the database, an SMTP server with STARTTLS on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from digestdata import W48_START, DigestData
from smtpserver import LoopbackCA, SmtpServer

from bot.store import make_engine, upgrade


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[SmtpServer, LoopbackCA]]:
    ca = LoopbackCA(tmp_path)
    with SmtpServer(tls=ca.server_context("127.0.0.1")) as server:
        yield server, ca


@pytest.fixture
def env(tmp_path: Path, db_url: str, smtp: tuple[SmtpServer, LoopbackCA]) -> dict[str, str]:
    server, ca = smtp
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        data = DigestData(engine, ["uk-mod", "nhk"])
        t = W48_START + timedelta(days=1)
        data.entry("uk-mod", "GCAP treaty <b>enters</b> into force", published=t,
                   link="https://www.gov.uk/gcap", rules={"gcap": ["GCAP"]})
        data.entry("nhk", "政府安全保障能力強化支援の対象国にジブチ", published=t,
                   link="https://www3.nhk.or.jp/a", rules={"osa-recipients": ["ジブチ"]})
    finally:
        engine.dispose()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    return clean | {
        "POLICYBOT_DATABASE_URL": db_url, "POLICYBOT_RULES_DIR": str(rules),
        "POLICYBOT_SMTP_HOST": "127.0.0.1", "POLICYBOT_SMTP_PORT": str(server.port),
        "POLICYBOT_SMTP_FROM": "policybot@example.org",
        "POLICYBOT_SMTP_CA_FILE": str(ca.ca_file), "COLUMNS": "200",
    }


def policybot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_preview_renders_without_sending(
    env: dict[str, str], smtp: tuple[SmtpServer, LoopbackCA], tmp_path: Path
) -> None:
    html = tmp_path / "digest.html"
    result = policybot(env, "digest", "preview", "weekly", "--period", "2026-W48",
                       "--html", str(html))
    assert result.returncode == 0, result.stderr
    assert "Subject: UK–Japan security — week of 23 Nov: 2 items" in result.stdout
    assert "Period:  2026-W48, Mon 23 Nov 2026 08:00 GMT – Mon 30 Nov 2026 08:00 GMT" in \
        result.stdout
    assert "high     Japan OSA — recipient countries: 1 items" in result.stdout
    page = html.read_text(encoding="utf-8")
    assert "GCAP treaty &lt;b&gt;enters&lt;/b&gt; into force" in page
    text = policybot(env, "digest", "preview", "weekly", "--period", "2026-11-30", "--text")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("UK–Japan security\nWeek of 23 Nov")
    assert "* GCAP treaty <b>enters</b> into force\n" in text.stdout
    assert smtp[0].mail_commands == 0


def test_send_mails_a_period_once_and_force_mails_it_again(
    env: dict[str, str], smtp: tuple[SmtpServer, LoopbackCA]
) -> None:
    server, _ = smtp
    first = policybot(env, "digest", "send", "weekly", "--period", "2026-W48")
    assert first.returncode == 0, first.stderr
    assert "weekly 2026-W48: sent to desk@example.org (2 items)" in first.stdout
    again = policybot(env, "digest", "send", "weekly", "--period", "2026-W48")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("weekly 2026-W48: sent ")
    assert "(2 items); --force sends it again" in again.stdout
    assert len(server.received) == 1
    forced = policybot(env, "digest", "send", "weekly", "--period", "2026-W48", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(server.received) == 2
    copy = policybot(env, "digest", "send", "weekly", "--period", "2026-W48",
                     "--to", "me@example.org")
    assert copy.returncode == 0, copy.stderr
    assert server.received[-1].recipients == ["me@example.org"]
    listing = policybot(env, "digest", "list")
    assert listing.returncode == 0, listing.stderr
    assert "weekly" in listing.stdout and "sent 2 times" in listing.stdout


def test_a_refused_digest_is_an_error_and_shows_in_status(
    env: dict[str, str], smtp: tuple[SmtpServer, LoopbackCA]
) -> None:
    server, _ = smtp
    server.reply("554 5.7.1 Relay access denied")
    result = policybot(env, "digest", "send", "weekly", "--period", "2026-W48")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: weekly 2026-W48: 127.0.0.1:{server.port}: refused: 554 5.7.1 Relay access "
        "denied"]
    status = policybot(env, "status")
    assert status.returncode == 1, status.stdout
    assert "digest weekly: not sent yet" in status.stdout
    assert "2026-W48: failed: 127.0.0.1" in status.stdout and "554 5.7.1" in status.stdout


@pytest.mark.parametrize(("args", "wording"), [
    (["digest", "send", "weekly", "--period", "2026-11-29"],
     "error: --period: 'weekly' is not sent on 2026-11-29"),
    (["digest", "preview", "monthly"], "digests.yaml: no digest named 'monthly' (digests: "
                                       "weekly)"),
    (["digest", "send", "weekly", "--to", "not an address"], "error: --to: 'not an address'"),
])
def test_bad_input_is_one_line(env: dict[str, str], args: list[str], wording: str) -> None:
    result = policybot(env, *args)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and wording in lines[0], result.stderr


def test_send_without_smtp_settings_says_which_variable(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "POLICYBOT_SMTP_HOST"}
    result = policybot(env, "digest", "send", "weekly", "--period", "2026-W48")
    assert result.returncode == 2
    assert result.stderr.startswith("error: POLICYBOT_SMTP_HOST: not set")


def test_an_invalid_digests_file_shows_in_status(env: dict[str, str]) -> None:
    path = Path(env["POLICYBOT_RULES_DIR"]) / "digests.yaml"
    line = "  - {name: weekly, title: T, recipients: [nobody]}"
    path.write_text(f"digests:\n{line}\n", encoding="utf-8")
    status = policybot(env, "status")
    assert status.returncode == 1
    where = f"{path}:2:{line.index('nobody') + 1}"
    assert f"{where}: recipient 'nobody' is not an email address" in status.stdout
