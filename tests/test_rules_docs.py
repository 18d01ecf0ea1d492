"""rules/README.md, the analyst's guide: every example rule in it loads and passes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from bot.rules import load_rules, run_examples

GUIDE = (ROOT / "rules" / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", GUIDE, flags=re.S)


def test_the_guide_has_an_example_for_every_construct() -> None:
    text = "\n".join(BLOCKS)
    for construct in ('"', "*", "case:", "$", "@", "title:", "lang:", "NEAR/", "NOT", "exclude:",
                      "/FY", "scope:", "track:", "route:", "status:", "severity:", "enabled:"):
        assert construct in text, construct


@pytest.mark.parametrize("block", BLOCKS, ids=[re.match(r"id: (\S+)", b).group(1)  # type: ignore[union-attr]
                                               for b in BLOCKS])
def test_each_guide_example_loads_cleanly_and_its_examples_pass(block: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "rules" / "lists", tmp_path / "lists")
    rule_id = re.match(r"id: (\S+)", block).group(1)  # type: ignore[union-attr]
    (tmp_path / f"{rule_id}.yaml").write_text(block, encoding="utf-8")
    rules = load_rules(tmp_path)
    assert [str(w) for w in rules.warnings] == []
    results = run_examples(rules)
    assert {r.kind for r in results} >= {"match", "no_match"}
    assert [(r.kind, r.example.title, r.reason) for r in results if not r.passed] == []
