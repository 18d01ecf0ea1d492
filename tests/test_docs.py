"""The README's examples work as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import ROOT

from bot.rules import load_rules, run_examples
from bot.sources import load_feeds

README = (ROOT / "README.md").read_text(encoding="utf-8")


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_the_readme_rule_example_loads_and_its_examples_pass(tmp_path: Path) -> None:
    (rule,) = [b for b in yaml_blocks() if b.startswith("id: osa-recipients")]
    shutil.copytree(ROOT / "rules" / "lists", tmp_path / "lists")
    (tmp_path / "osa-recipients.yaml").write_text(rule, encoding="utf-8")
    rules = load_rules(tmp_path)
    results = run_examples(rules)
    assert results and all(r.passed for r in results)


def test_the_readme_feeds_example_is_valid(tmp_path: Path) -> None:
    (feeds,) = [b for b in yaml_blocks() if b.startswith("feeds:")]
    (tmp_path / "feeds.yaml").write_text(feeds, encoding="utf-8")
    (feed,) = load_feeds(tmp_path / "feeds.yaml")
    assert feed.name == "uk-mod"


def test_the_readme_lists_every_command() -> None:
    from bot.cli import walk_commands

    for path in walk_commands():
        if path and not (len(path) == 1 and path[0] in ("db", "feeds", "rules", "alerts")):
            assert f"policybot {' '.join(path)}" in README, f"README misses `{' '.join(path)}`"
