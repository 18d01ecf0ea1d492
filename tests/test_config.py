"""Settings and the feeds file: clear one-line errors that name the variable, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.sources import load_feeds, parse_duration


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "POLICYBOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url == "sqlite:///policybot.db"
    assert settings.rules_dir == Path("rules")
    assert settings.delivery_mode == "console"


def test_slack_token_selects_slack_and_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-value-123")
    monkeypatch.setenv("POLICYBOT_SLACK_API_URL", "http://127.0.0.1:9/api")
    settings = load_settings()
    assert settings.delivery_mode == "slack"
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert "xoxb-secret-value-123" not in repr(settings)
    assert "xoxb-secret-value-123" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POLICYBOT_ALLOW_PRIVATE_ADDRESSES", "perhaps", "POLICYBOT_ALLOW_PRIVATE_ADDRESSES:"),
        ("POLICYBOT_LOG_FORMAT", "xml", "POLICYBOT_LOG_FORMAT:"),
        ("POLICYBOT_SMTP_PORT", "twenty-five", "POLICYBOT_SMTP_PORT:"),
        ("POLICYBOT_SLACK_API_URL", "slack.example", "POLICYBOT_SLACK_API_URL:"),
    ],
)
def test_a_malformed_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_a_malformed_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_SMTP_PORT", "hunter2-port")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_feeds_file_is_read_with_defaults(tmp_path: Path) -> None:
    (feed,) = load_feeds(write(tmp_path, "feeds:\n  - {url: 'https://a.example/f', name: a}\n"))
    assert feed.interval.total_seconds() == 1800
    assert feed.enabled
    assert feed.tags == ()


@pytest.mark.parametrize(
    ("text", "where", "wording"),
    [
        ("feeds:\n  - {url: 'https://a.example/f', name: a, interval: 1m}\n", ":2:", "at least 5m"),
        ("feeds:\n  - {url: 'ftp://a.example/f', name: a}\n", ":2:", "http(s) URL"),
        ("feeds:\n  - url: 'https://a.example/f'\n    name: a\n    tgas: [x]\n", ":4:5",
         "unknown key 'tgas'"),
        ("feeds:\n  - {url: 'https://a.example/f', name: a}\n"
         "  - {url: 'https://b.example/f', name: a}\n", ":3:", "duplicate feed name 'a'"),
        ("feeds:\n  - {url: 'https://a.example/f', name: A B}\n", ":2:", "'name'"),
        ("feeds:\n  - {url: 'https://a.example/f', name: a, interval: soon}\n", ":2:",
         "not a duration"),
        ("feeds:\n  - {url: 'https://u:p@a.example/f', name: a}\n", ":2:", "credentials"),
        ("feeds: [\n", ":2:", "invalid YAML"),
    ],
)
def test_feeds_file_errors_name_file_line_and_field(
    tmp_path: Path, text: str, where: str, wording: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_feeds(path)
    message = str(raised.value)
    assert message.startswith(str(path) + where), message
    assert wording in message
    assert "\n" not in message


def test_shipped_feeds_file_is_valid() -> None:
    feeds = load_feeds(Path(__file__).resolve().parent.parent / "rules" / "feeds.yaml")
    names = {f.name for f in feeds if f.enabled}
    # The beat's core sources are there, in English and Japanese.
    assert {"uk-mod", "uk-fcdo", "rusi-commentary", "jp-mod-news", "jp-mofa-overseas-safety",
            "nhk-news-politics", "japan-times", "defense-news"} <= names
    assert {f.language for f in feeds} == {"en", "ja"}


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("1d", 86400), ("1.5h", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
