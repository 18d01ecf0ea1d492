"""Render a real digest and photograph it with headless Chromium: docs/digest.png (desktop)
and docs/digest-phone.png (360 px wide, dark mode).

    .venv/bin/python docs/render_digest.py            # needs `chromium` (apt-get install chromium)

Real means the whole path: sample feeds (English and Japanese) served on 127.0.0.1, one
poll by the bot's own poller against a temporary SQLite database with the shipped rules,
then ``policybot digest preview``'s code for the week those items fall in. One feed is
missing on purpose, so the footer shows a failing source.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import open_app  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.demo_run import serve_directory  # noqa: E402
from bot.digest.config import load_digests  # noqa: E402
from bot.digest.job import DigestRunner  # noqa: E402
from bot.digest.render import render_html  # noqa: E402
from bot.digest.schedule import parse_period  # noqa: E402
from bot.store.digests import DigestStore  # noqa: E402

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # Saturday of ISO week 48


def rss(title: str, items: list[tuple[str, str, str, str]]) -> str:
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
        f"<pubDate>{date}</pubDate><description>{text}</description></item>"
        for t, link, date, text in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title><link>https://example.org/</link>{body}</channel></rss>")


FEEDS = {
    "uk-mod.xml": rss("Ministry of Defence", [
        ("GCAP: UK, Japan and Italy agree the next phase of the fighter programme",
         "https://www.gov.uk/government/news/gcap-next-phase", "Tue, 24 Nov 2026 10:00:00 GMT",
         "The three partners in the Global Combat Air Programme (GCAP) confirmed funding for "
         "the next phase through GIGO, the international government organisation."),
        ("Defence Secretary welcomes Japanese destroyer to Portsmouth",
         "https://www.gov.uk/government/news/jmsdf-portsmouth", "Thu, 26 Nov 2026 15:30:00 GMT",
         "Japan Maritime Self-Defense Force ships will provide asset protection to Royal Navy "
         "vessels during the joint exercise, the first under the reciprocal access agreement."),
    ]),
    "mofa.xml": rss("Ministry of Foreign Affairs of Japan", [
        ("Exchange of Notes on Official Security Assistance to the Philippines",
         "https://www.mofa.go.jp/press/release/osa-philippines-2026.html",
         "Wed, 25 Nov 2026 06:00:00 GMT",
         "Japan will provide coastal surveillance radars to the Armed Forces of the Philippines "
         "under its Official Security Assistance (OSA) for FY2026."),
    ]),
    "nhk.xml": rss("NHK News", [
        ("政府安全保障能力強化支援の対象国にジブチ 初めてアフリカから",
         "https://www3.nhk.or.jp/news/html/20261127/osa-djibouti.html",
         "Fri, 27 Nov 2026 01:00:00 GMT",
         "政府は、同志国の軍に装備品を無償で供与する政府安全保障能力強化支援（ＯＳＡ）の対象国に、"
         "アフリカのジブチを初めて加える方針を固めました。沿岸監視レーダーの供与を検討しています。"),
        ("防衛相が交代 新防衛大臣に就任",
         "https://www3.nhk.or.jp/news/html/20261126/defense-minister.html",
         "Thu, 26 Nov 2026 09:00:00 GMT",
         "内閣改造で新たな防衛大臣が就任し、日英の防衛協力を引き続き進める考えを示しました。"),
    ]),
    "diplomat.xml": rss("The Diplomat", [
        ("Japan to provide coastal radars to the Philippines under OSA",
         "https://thediplomat.com/2026/11/japan-osa-philippines-radars/",
         "Wed, 25 Nov 2026 11:00:00 GMT",
         "Tokyo's Official Security Assistance programme adds coastal radars for Manila."),
    ]),
    "japan-times.xml": rss("The Japan Times", [
        ("Japan to provide coastal radars to Philippines under OSA",
         "https://www.japantimes.co.jp/news/2026/11/25/japan/osa-philippines/",
         "Wed, 25 Nov 2026 13:00:00 GMT",
         "The Official Security Assistance grant covers coastal radars for the Philippines."),
    ]),
}

FEEDS_YAML = """feeds:
  - {{name: uk-mod, url: "{base}/uk-mod.xml", language: en}}
  - {{name: mofa-en, url: "{base}/mofa.xml", language: en}}
  - {{name: nhk, url: "{base}/nhk.xml", language: ja}}
  - {{name: the-diplomat, url: "{base}/diplomat.xml", language: en}}
  - {{name: japan-times, url: "{base}/japan-times.xml", language: en}}
  - {{name: rusi, url: "{base}/rusi-missing.xml", language: en}}
"""


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="policybot-digest-") as tmp:
        work = Path(tmp)
        (work / "feeds").mkdir()
        for name, text in FEEDS.items():
            (work / "feeds" / name).write_text(text, encoding="utf-8")
        rules = work / "rules"
        shutil.copytree(ROOT / "rules", rules)
        with serve_directory(work / "feeds") as base:
            (rules / "feeds.yaml").write_text(FEEDS_YAML.format(base=base), encoding="utf-8")
            settings = load_settings(database_url=f"sqlite:///{work / 'digest.db'}",
                                     rules_dir=rules, allow_private_addresses=True)
            with open_app(settings, clock=lambda: NOW, backfill=False) as bot:
                bot.poller.cycle(force=True)
                (weekly,) = load_digests(rules / "digests.yaml")
                runner = DigestRunner(store=DigestStore(bot.store.engine), rules=bot.rules,
                                      mailer=None, sender="policybot@example.org",
                                      clock=lambda: NOW)
                digest = runner.prepare(weekly, parse_period(weekly, "2026-W48"))
        html = work / "digest.html"
        html.write_text(render_html(digest), encoding="utf-8")
        print(digest.subject)
        shoot(chromium, html, ROOT / "docs" / "digest.png", "760,1560", dark=False)
        shoot(chromium, html, ROOT / "docs" / "digest-phone.png", "360,1500", dark=True)


def shoot(chromium: str, html: Path, target: Path, size: str, *, dark: bool) -> None:
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={size}", f"--screenshot={target}"]
    if dark:
        args.append("--force-dark-mode")  # prefers-color-scheme: dark
    target.unlink(missing_ok=True)
    done = subprocess.run([*args, html.as_uri()], capture_output=True, text=True, timeout=120)
    if not target.exists():  # Chromium exits 0 even when it wrote nothing
        sys.exit(f"chromium wrote no {target.name}:\n{done.stderr[-2000:]}")
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
