"""Sending digests to a real SMTP server on loopback (aiosmtpd), with STARTTLS and a
certificate from a test CA: once per period, catch-up, retries, failures that stay failed."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import ROOT, FakeClock
from digestdata import W48_END, W48_START, DigestData
from smtpserver import LoopbackCA, SmtpServer

from bot.digest.config import DigestConfig
from bot.digest.job import DigestRunner
from bot.digest.mail import MailError, SmtpMailer, SmtpSettings
from bot.digest.schedule import parse_period
from bot.rules import RuleSet, load_rules
from bot.store import Store
from bot.store.digests import FAILED, RETRY, SENT, DigestStore

WEEKLY = DigestConfig("weekly", "UK–Japan security", ("desk@example.org", "dg@example.org"))
SENDER = "policybot@example.org"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(ROOT / "rules")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return LoopbackCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def smtp(ca: LoopbackCA) -> Iterator[SmtpServer]:
    """STARTTLS offered and required; the certificate names 127.0.0.1 and localhost."""
    with SmtpServer(tls=ca.server_context("127.0.0.1", "localhost")) as server:
        yield server


def settings_for(server: SmtpServer, ca: LoopbackCA, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {"host": "127.0.0.1", "port": server.port, "sender": SENDER,
                                 "ca_file": ca.ca_file, "timeout": 10.0}
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def week48(store: Store) -> DigestData:
    data = DigestData(store.engine, ["uk-mod", "nhk", "mofa-en"])
    t = W48_START + timedelta(days=1)
    data.entry("uk-mod", "GCAP treaty enters into force", link="https://www.gov.uk/gcap",
               summary="The Global Combat Air Programme treaty entered into force.",
               published=t, rules={"gcap": ["Global Combat Air Programme"]})
    djibouti = data.entry("nhk", "政府安全保障能力強化支援の対象国にジブチ",
                          link="https://www3.nhk.or.jp/news/a.html",
                          published=t + timedelta(days=1),
                          rules={"osa-recipients": ["政府安全保障能力強化支援", "ジブチ"]},
                          lang="ja")
    data.first_mention("osa-recipients", "Djibouti", djibouti, t + timedelta(days=1))
    data.entry("mofa-en", "Japan funds coastal radars for Manila under OSA",
               link="https://www.mofa.go.jp/osa.html", published=t + timedelta(days=2),
               rules={"osa-recipients": ["OSA"]})
    return data


def runner_for(store: Store, rules: RuleSet, settings: SmtpSettings, clock: FakeClock
               ) -> DigestRunner:
    return DigestRunner(store=DigestStore(store.engine), rules=lambda: rules,
                        mailer=SmtpMailer(settings), sender=SENDER, clock=clock,
                        rng=lambda: 0.0)


def parts(message: EmailMessage) -> dict[str, str]:
    return {p.get_content_type(): p.get_content() for p in message.iter_parts()}


def test_the_digest_arrives_once_over_starttls_as_text_and_html(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    clock = FakeClock(W48_END + timedelta(seconds=5))
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)

    (outcome,) = runner.run_due([WEEKLY])

    assert (outcome.result, outcome.items) == ("sent", 3)
    (got,) = smtp.received
    assert got.tls, "the message went over a TLS session"
    assert got.sender == SENDER and got.recipients == ["desk@example.org", "dg@example.org"]
    msg = got.message
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "UK–Japan security — week of 23 Nov: 3 items, 1 first mention"
    text, html = parts(msg)["text/plain"], parts(msg)["text/html"]
    for expected in ("FIRST MENTIONS THIS WEEK", "== Japan OSA — recipient countries [high]",
                     "GCAP treaty enters into force", "政府安全保障能力強化支援の対象国にジブチ",
                     "https://www.mofa.go.jp/osa.html", "*Global Combat Air Programme*"):
        assert expected in text, expected
    assert '<a href="https://www.gov.uk/gcap"' in html and "First mentions this week" in html
    record = DigestStore(store.engine).get("weekly", W48_END)
    assert record is not None and record.status == SENT and record.items == 3
    assert record.message_id == msg["Message-ID"]

    # The cron job and the sweep both fire again, later, and a restart comes: nothing more.
    clock.advance(hours=1)
    assert runner.run_due([WEEKLY]) == []
    again = runner.send(WEEKLY, parse_period(WEEKLY, "2026-W48"))
    assert again.result == "already" and len(smtp.received) == 1

    forced = runner.send(WEEKLY, parse_period(WEEKLY, "2026-W48"), force=True)
    assert forced.result == "sent" and len(smtp.received) == 2
    second = smtp.received[1].message["Message-ID"]
    assert second != msg["Message-ID"]
    assert DigestStore(store.engine).get("weekly", W48_END).sends == 2  # type: ignore[union-attr]


def test_a_period_missed_while_down_is_sent_on_return_within_the_grace(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    # The bot was down from Sunday to Tuesday 10:00: W48's Monday send was missed.
    clock = FakeClock(W48_END + timedelta(days=1, hours=2))
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)
    (outcome,) = runner.run_due([WEEKLY])
    assert outcome.result == "sent" and outcome.period.label == "2026-W48"
    assert len(smtp.received) == 1


def test_a_period_missed_beyond_the_grace_is_not_sent(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    clock = FakeClock(W48_END + timedelta(days=2, minutes=1))
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)
    assert runner.run_due([WEEKLY]) == []
    assert smtp.received == [] and DigestStore(store.engine).get("weekly", W48_END) is None


def test_starttls_not_offered_sends_nothing_in_plaintext(
    store: Store, rules: RuleSet, ca: LoopbackCA
) -> None:
    week48(store)
    with SmtpServer() as plain:  # no TLS context: STARTTLS is not advertised
        runner = runner_for(store, rules, settings_for(plain, ca), FakeClock(W48_END))
        (outcome,) = runner.run_due([WEEKLY])
        assert outcome.result == "failed"
        assert "does not offer STARTTLS; refusing to send in plaintext" in (outcome.error or "")
        assert plain.mail_commands == 0 and plain.received == []
    record = DigestStore(store.engine).get("weekly", W48_END)
    assert record is not None and record.status == FAILED


def test_a_certificate_for_another_host_name_is_refused(
    store: Store, rules: RuleSet, ca: LoopbackCA
) -> None:
    week48(store)
    with SmtpServer(tls=ca.server_context("mail.example.org")) as server:
        runner = runner_for(store, rules, settings_for(server, ca), FakeClock(W48_END))
        (outcome,) = runner.run_due([WEEKLY])
        assert outcome.result == "failed" and "certificate not trusted" in (outcome.error or "")
        assert "127.0.0.1" in (outcome.error or "")
        assert server.mail_commands == 0


def test_a_certificate_from_an_untrusted_ca_is_refused(
    smtp: SmtpServer, ca: LoopbackCA, tmp_path: Path
) -> None:
    # The system's CAs (no POLICYBOT_SMTP_CA_FILE) do not know the test CA.
    mailer = SmtpMailer(settings_for(smtp, ca, ca_file=None))
    message = EmailMessage()
    message["Subject"] = "x"
    message.set_content("x")
    with pytest.raises(MailError) as caught:
        mailer.send(message, ["desk@example.org"])
    assert caught.value.permanent and "POLICYBOT_SMTP_CA_FILE" in caught.value.message
    assert smtp.mail_commands == 0


def test_implicit_tls_works_with_the_test_ca(ca: LoopbackCA) -> None:
    from aiosmtpd.controller import Controller
    from smtpserver import Handler, free_port

    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            ssl_context=ca.server_context("127.0.0.1"))
    controller.start()
    try:
        settings = SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, ssl=True,
                                ca_file=ca.ca_file, timeout=10.0)
        message = EmailMessage()
        message["Subject"] = "hello"
        message.set_content("over implicit TLS")
        SmtpMailer(settings).send(message, ["desk@example.org"])
    finally:
        controller.stop()
    (got,) = handler.received
    assert got.message["Subject"] == "hello"


def test_login_happens_only_inside_tls(store: Store, rules: RuleSet, ca: LoopbackCA) -> None:
    week48(store)
    with SmtpServer(tls=ca.server_context("127.0.0.1"), users={"bot": "s3cret"}) as server:
        good = settings_for(server, ca, username="bot", password="s3cret")
        runner = runner_for(store, rules, good, FakeClock(W48_END))
        assert [o.result for o in runner.run_due([WEEKLY])] == ["sent"]
        bad = SmtpMailer(settings_for(server, ca, username="bot", password="wrong"))
        with pytest.raises(MailError) as caught:
            bad.send(server.received[0].message, ["desk@example.org"])
        assert caught.value.permanent and "login refused: 535" in caught.value.message
        assert "wrong" not in caught.value.message
    assert len(server.received) == 1


def test_a_transient_failure_is_retried_with_backoff_until_it_goes(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    smtp.reply("451 4.3.0 Try again later", "421 4.7.0 Too busy")
    clock = FakeClock(W48_END)
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)

    (first,) = runner.run_due([WEEKLY])
    assert first.result == "retry" and "451" in (first.error or "")
    assert first.retry_at == W48_END + timedelta(seconds=30)  # 1 min, jitter at its floor
    assert runner.run_due([WEEKLY]) == []  # not due yet: nothing is sent early
    clock.now = first.retry_at
    (second,) = runner.run_due([WEEKLY])
    assert second.result == "retry" and second.retry_at == clock.now + timedelta(minutes=1)
    clock.now = second.retry_at
    (third,) = runner.run_due([WEEKLY])
    assert third.result == "sent" and len(smtp.received) == 1
    record = DigestStore(store.engine).get("weekly", W48_END)
    assert record is not None and (record.status, record.attempts) == (SENT, 3)


def test_a_server_that_is_down_is_a_transient_failure(
    store: Store, rules: RuleSet, ca: LoopbackCA
) -> None:
    from smtpserver import free_port

    week48(store)
    down = SmtpSettings(host="127.0.0.1", port=free_port(), sender=SENDER, ca_file=ca.ca_file)
    runner = runner_for(store, rules, down, FakeClock(W48_END))
    (outcome,) = runner.run_due([WEEKLY])
    assert outcome.result == "retry" and "cannot connect" in (outcome.error or "")
    assert DigestStore(store.engine).get("weekly", W48_END).status == RETRY  # type: ignore[union-attr]


def test_transient_failures_give_up_when_the_grace_runs_out(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    smtp.reply("451 later")
    clock = FakeClock(W48_END + timedelta(days=2) - timedelta(seconds=10))
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)
    (outcome,) = runner.run_due([WEEKLY])
    assert outcome.result == "failed" and "gave up after 1 attempts" in (outcome.error or "")


def test_a_permanent_refusal_is_recorded_and_not_retried(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    smtp.reply("554 5.7.1 Message rejected as spam")
    clock = FakeClock(W48_END)
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)
    (outcome,) = runner.run_due([WEEKLY])
    assert outcome.result == "failed" and "554 5.7.1 Message rejected as spam" in (
        outcome.error or "")
    clock.advance(hours=3)
    assert runner.run_due([WEEKLY]) == [] and smtp.received == []
    record = DigestStore(store.engine).get("weekly", W48_END)
    assert record is not None and record.status == FAILED and "554" in (record.error or "")


def test_a_send_interrupted_by_a_crash_is_not_repeated_unasked(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    digests = DigestStore(store.engine)
    # A process claimed W48 and died before recording the server's answer.
    digests.claim("weekly", W48_START, W48_END, now=W48_END, recipients=WEEKLY.recipients)
    clock = FakeClock(W48_END + timedelta(minutes=30))
    runner = runner_for(store, rules, settings_for(smtp, ca), clock)
    assert runner.run_due([WEEKLY]) == [] and smtp.received == []
    record = digests.get("weekly", W48_END)
    assert record is not None and record.status == FAILED
    assert "digest send weekly --period 2026-11-30 --force" in (record.error or "")


def test_an_empty_week_says_so_unless_the_digest_skips_it(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    DigestData(store.engine, ["uk-mod"])
    quiet = DigestConfig("quiet", "Quiet desk", ("desk@example.org",), skip_empty=True)
    runner = runner_for(store, rules, settings_for(smtp, ca), FakeClock(W48_END))
    outcomes = runner.run_due([WEEKLY, quiet])
    assert [(o.digest, o.result) for o in outcomes] == [("weekly", "sent"), ("quiet", "skipped")]
    (got,) = smtp.received
    assert got.message["Subject"] == "UK–Japan security — week of 23 Nov: nothing matched"
    assert "Nothing matched this week." in parts(got.message)["text/plain"]
    assert runner.run_due([WEEKLY, quiet]) == []


def test_a_copy_to_another_address_leaves_the_period_unsent(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA
) -> None:
    week48(store)
    runner = runner_for(store, rules, settings_for(smtp, ca), FakeClock(W48_END))
    outcome = runner.send(WEEKLY, parse_period(WEEKLY, "2026-W48"), to=["me@example.org"])
    assert outcome.result == "sent" and smtp.received[0].recipients == ["me@example.org"]
    assert DigestStore(store.engine).get("weekly", W48_END) is None
    assert [o.result for o in runner.run_due([WEEKLY])] == ["sent"]


def test_the_server_certificate_check_uses_the_system_defaults_without_a_ca_file() -> None:
    context = SmtpMailer(SmtpSettings(host="smtp.example.org", port=587,
                                      sender=SENDER)).tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_run_installs_a_cron_job_per_digest_and_a_catch_up_sweep(
    store: Store, rules: RuleSet, smtp: SmtpServer, ca: LoopbackCA, tmp_path: Path
) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.digest.service import DigestService

    week48(store)
    (tmp_path / "digests.yaml").write_text(
        "digests:\n  - {name: weekly, title: UK–Japan security, recipients: [desk@example.org]}\n"
        "  - {name: tokyo, title: Tokyo, recipients: [jp@example.org], schedule: '30 7 * * fri',"
        " timezone: Asia/Tokyo}\n", encoding="utf-8")
    clock = FakeClock(W48_END + timedelta(hours=3))
    service = DigestService(tmp_path / "digests.yaml",
                            runner_for(store, rules, settings_for(smtp, ca), clock),
                            lambda: rules)
    scheduler = BackgroundScheduler(timezone="UTC")
    service.install(scheduler, clock.now)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert sorted(jobs) == ["digest:tokyo", "digest:weekly", "digests"]
    assert str(jobs["digest:weekly"].trigger) == (
        "cron[month='*', day='*', day_of_week='mon', hour='8', minute='0']")
    assert jobs["digest:weekly"].misfire_grace_time == 2 * 24 * 3600
    # The sweep is what a restart runs first: W48, missed at 08:00, goes out now, once.
    assert [(o.digest, o.result) for o in service.sweep()] == [("weekly", "sent")]
    assert service.run_due("weekly") == [] and len(smtp.received) == 1
