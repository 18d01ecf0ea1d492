"""``policybot demo``: bundled sample feeds served on loopback, one cycle, alerts printed."""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console

from bot.app import open_app
from bot.config import Settings
from bot.errors import ConfigError
from bot.sources import load_feeds
from bot.summary import print_cycle

DEMO_DIR = Path(__file__).resolve().parent / "demo"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-feeds", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def prepare_rules(rules_dir: Path, target: Path, base_url: str) -> None:
    """A rules directory for the demo: the real rules and lists, the demo's feeds."""
    if not rules_dir.is_dir():
        raise ConfigError(f"POLICYBOT_RULES_DIR: {rules_dir} is not a directory; run the demo "
                          "from the project directory or point POLICYBOT_RULES_DIR at rules/")
    target.mkdir()
    for path in rules_dir.glob("*.yaml"):
        if path.name not in ("feeds.yaml", "digests.yaml"):
            shutil.copy2(path, target / path.name)
    if (rules_dir / "lists").is_dir():
        shutil.copytree(rules_dir / "lists", target / "lists")
    feeds = (DEMO_DIR / "feeds.yaml").read_text(encoding="utf-8")
    (target / "feeds.yaml").write_text(feeds.replace("{base}", base_url), encoding="utf-8")


def run_demo(settings: Settings, console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="policybot-demo-") as tmp, \
            serve_directory(DEMO_DIR) as base:
        rules_dir = Path(tmp) / "rules"
        prepare_rules(settings.rules_dir, rules_dir, base)
        demo_settings = settings.model_copy(update={
            "database_url": f"sqlite:///{Path(tmp) / 'demo.db'}",
            "rules_dir": rules_dir,
            "allow_private_addresses": True,  # the sample feeds are on 127.0.0.1
            "slack_bot_token": None,
            "slack_webhook_url": None,
        })
        n_feeds = len(load_feeds(rules_dir / "feeds.yaml"))
        console.print(f"[bold]policybot demo[/]: serving {n_feeds} "
                      f"sample feeds at {base}; alerts print below.\n"
                      "(The demo turns off the backfill window so that the sample items alert.)")
        # The sample items are dated; a real first poll would treat them as back catalogue.
        with open_app(demo_settings, console=console, backfill=False) as bot:
            outcomes = bot.poller.cycle(force=True)
            report = bot.deliverer.deliver_due()
            print_cycle(console, outcomes, report.sent, bot.store.alert_counts()["pending"],
                         report.failed)
