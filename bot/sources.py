"""Load and validate ``rules/feeds.yaml``: the feeds to poll.

```yaml
feeds:
  - {url: "https://www.gov.uk/…/ministry-of-defence.atom", name: uk-mod, tags: [uk, gov],
     language: en, interval: 30m, enabled: true}
```
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.errors import ConfigError
from bot.model import FeedSource
from bot.yamlfile import Located, read_yaml

DEFAULT_INTERVAL = timedelta(minutes=30)
MIN_INTERVAL = timedelta(minutes=5)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_KEYS = {"url", "name", "interval", "tags", "language", "enabled", "format", "notes"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d`` → timedelta. Raises ValueError with a hint."""
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"{text!r} is not a duration; write it like 30m, 2h or 1d")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def load_feeds(path: Path) -> tuple[FeedSource, ...]:
    """Read the feeds file; the first problem is a ConfigError naming file, line and field."""
    doc = read_yaml(path)
    if doc.data is None:
        return ()
    if not isinstance(doc.data, dict) or set(doc.data) - {"feeds"}:
        raise doc.error("expected a mapping with one key, 'feeds', holding a list of feeds")
    items = doc.data.get("feeds") or []
    if not isinstance(items, list):
        raise doc.error("'feeds' must be a list", "feeds")
    feeds: list[FeedSource] = []
    names: dict[str, int] = {}
    urls: dict[str, int] = {}
    for index, item in enumerate(items):
        feed = _feed(doc, index, item)
        if feed.name in names:
            raise doc.error(
                f"duplicate feed name {feed.name!r} (also feed #{names[feed.name] + 1})",
                "feeds", index, "name",
            )
        if feed.url in urls:
            raise doc.error(
                f"duplicate feed url (also feed #{urls[feed.url] + 1})", "feeds", index, "url"
            )
        names[feed.name] = index
        urls[feed.url] = index
        feeds.append(feed)
    return tuple(feeds)


def _feed(doc: Located, index: int, item: Any) -> FeedSource:
    at = ("feeds", index)
    if not isinstance(item, dict):
        raise doc.error("each feed must be a mapping with at least 'url' and 'name'", *at)
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise doc.error(
            f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}",
            *at, unknown[0], at_key=True,
        )
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise doc.error("feed needs a 'url'", *at)
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise doc.error(f"url must be an http(s) URL, got {url!r}", *at, "url")
    if parts.username or parts.password:
        raise doc.error("url must not contain credentials", *at, "url")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error(
            "feed needs a 'name' of lower-case letters, digits, '-', '.' or '_'", *at, "name"
        )
    interval = DEFAULT_INTERVAL
    if "interval" in item:
        try:
            interval = parse_duration(item["interval"])
        except ValueError as exc:
            raise doc.error(f"interval: {exc}", *at, "interval") from None
        if interval < MIN_INTERVAL:
            raise doc.error(
                "interval: at least 5m, to be polite to the publisher", *at, "interval"
            )
    tags = item.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise doc.error("tags must be a list of words", *at, "tags")
    language = item.get("language")
    if language is not None and not isinstance(language, str):
        raise doc.error("language must be a language code such as en or ja", *at, "language")
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        raise doc.error("enabled must be true or false", *at, "enabled")
    return FeedSource(
        name=name, url=url, interval=interval, tags=tuple(tags), language=language,
        enabled=enabled,
    )


__all__ = ["ConfigError", "load_feeds", "parse_duration"]
