"""`policybot rules check|test|explain|backtest` as an analyst runs them."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from bot.cli import app
from bot.model import Entry, FeedSource
from bot.store import EntryWrite, PollWrite, Store, make_engine, upgrade

runner = CliRunner()


@pytest.fixture
def rules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", directory, ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.setenv("POLICYBOT_RULES_DIR", str(directory))
    monkeypatch.setenv("POLICYBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'bot.db'}")
    return directory


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_check_reports_errors_as_json_for_editors_and_exits_1(rules_dir: Path) -> None:
    (rules_dir / "gcap.yaml").write_text("id: gcap\ntitle: T\nquery: a AND b OR c\n", "utf-8")
    code, output = invoke("rules", "check", "--format", "json")
    assert code == 1
    report = json.loads(output)
    assert report["ok"] is False
    (error,) = report["errors"]
    assert error["path"].endswith("gcap.yaml")
    assert (error["line"], error["col"], error["severity"]) == (3, 16, "error")
    assert error["message"].startswith("query: AND and OR at the same level need parentheses")


def test_check_takes_a_single_rule_file_and_prints_its_warnings(rules_dir: Path) -> None:
    path = rules_dir / "osa-recipients.yaml"
    code, output = invoke("rules", "check", str(path))
    assert code == 0, output
    assert "1 rules OK" in output
    (rules_dir / "acronym.yaml").write_text("id: acronym\ntitle: T\nquery: SDF\n", "utf-8")
    code, output = invoke("rules", "check")
    assert code == 0
    assert "acronym.yaml:3:8: warning: query: 'SDF' looks like an acronym" in output


def test_test_prints_the_confusion_table_and_why_each_failure_failed(rules_dir: Path) -> None:
    text = (rules_dir / "osa-recipients.yaml").read_text("utf-8")
    broken = text.replace('    - "Osaka expo draws record visitors"\n',
                          '    - "Osaka expo draws record visitors"\n'
                          '    - "Japan OSA radars for the Philippines"\n')
    kishida = ('    - "Kishida returned from Manila with an OSA agreement: '
               'Japan will fund coastal radars"\n')
    broken = broken.replace(kishida, kishida + '    - "Ofcom: Japan OSA radar fines"\n')
    (rules_dir / "osa-recipients.yaml").write_text(broken, "utf-8")
    code, output = invoke("rules", "test", "osa-recipients")
    assert code == 1
    assert "TP" in output and "FN" in output and "FP" in output
    assert "FAIL osa-recipients match" in output
    assert "excluded by uk_acts (found Ofcom)" in output
    assert "FAIL osa-recipients no_match" in output
    assert "why: matched: Japan, OSA, radar*, Philippines" in output


def test_explain_shows_the_tree_the_exclusion_and_the_verdict(rules_dir: Path) -> None:
    code, output = invoke("rules", "explain", "osa-recipients", "--text",
                          "Ofcom OSA fines for Japan radar makers in Manila")
    assert code == 0, output
    assert "✓ $osa_acronym  found OSA (title)" in output
    assert "✗ $osa_long" in output
    assert "exclude uk_acts" in output
    assert "result: EXCLUDED by uk_acts" in output


def test_explain_a_misspelt_rule_suggests_the_right_one(rules_dir: Path) -> None:
    code, output = invoke("rules", "explain", "osa-recipient", "--text", "x")
    assert code == 1
    assert "no such rule: osa-recipient; did you mean osa-recipients?" in output


NOW = datetime.now(UTC)


def _store_entries(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    store = Store(engine)
    store.sync_feeds([FeedSource(name="mofa", url="https://example.org/mofa.xml")], NOW)
    (feed,) = store.list_feeds()
    titles = {
        "a": "Japan's OSA to fund coastal radars",
        "b": "Japan's OSA: patrol vehicles for the coast guard",
        "c": "Osaka expo draws record visitors",
    }
    store.save_poll(PollWrite(feed.id, NOW - timedelta(days=1), tuple(
        EntryWrite(Entry(key=k, title=t, content_hash=k, link=f"https://example.org/{k}"),
                   None, ()) for k, t in titles.items())))
    engine.dispose()


def test_explain_reads_a_stored_entry_by_its_link(rules_dir: Path, tmp_path: Path) -> None:
    _store_entries(tmp_path)
    code, output = invoke("rules", "explain", "osa-recipients", "--url", "https://example.org/a")
    assert code == 0, output
    assert "result: MATCH" in output
    code, output = invoke("rules", "explain", "osa-recipients", "--url", "https://example.org/z")
    assert code == 1
    assert "no stored entry with link https://example.org/z" in output


def test_backtest_an_edit_shows_what_it_gains_and_loses(rules_dir: Path, tmp_path: Path) -> None:
    _store_entries(tmp_path)
    code, output = invoke("rules", "backtest", "osa-recipients", "--format", "json")
    assert code == 0, output
    current = json.loads(output)
    assert (current["entries"], current["matched"]) == (3, 1)  # only "a": radars
    edit = tmp_path / "edit" / "osa-recipients.yaml"
    edit.parent.mkdir()
    text = (rules_dir / "osa-recipients.yaml").read_text("utf-8")
    edit.write_text(text.replace("    - radar*\n", "    - patrol vehicle*\n"), "utf-8")
    code, output = invoke("rules", "backtest", str(edit), "--since", "7d", "--format", "json")
    assert code == 0, output
    report = json.loads(output)
    assert report["compared_with_rule_in_force"] is True
    changes = {r["title"]: r["change"] for r in report["rows"]}
    assert changes == {"Japan's OSA to fund coastal radars": "lost",
                       "Japan's OSA: patrol vehicles for the coast guard": "gained"}
    code, output = invoke("rules", "backtest", str(edit))
    assert code == 0
    assert "+1 gained" in output and "-1 lost" in output
    assert "mofa" in output


def test_backtest_a_broken_edit_is_a_one_line_error(rules_dir: Path, tmp_path: Path) -> None:
    edit = tmp_path / "osa-recipients.yaml"
    edit.write_text("id: osa-recipients\ntitle: T\nquery: $nope\n", "utf-8")
    code, output = invoke("rules", "backtest", str(edit))
    assert code == 1
    assert "osa-recipients.yaml:3:8: query: unknown term list '$nope'" in output
