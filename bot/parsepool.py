"""Feed parsing in worker processes, so that a cold cycle uses every core (issue 7).

Parsing and matching are pure and CPU-bound (XML, HTML → text, hashing, the rules' scan);
planning and storing stay in the poller's process, so each feed's results are still written
in one transaction there, its state with its entries. A pool holds only the documents in
flight (a few per worker): the cycle streams feeds through it rather than holding them::

    fetch (threads) ─▶ ParsePool.submit ─▶ worker: parse_feed, RuleSet.match ─▶ poller: store

The rules go to the workers by version (:meth:`ParsePool.use_rules`): a new rule set starts
new workers with it, and the poller uses a result's matches only when they were found with
the rule set it stores with (:meth:`ParsePool.matched_with`); otherwise it matches those
entries itself, so an alert always names the rules in force when it was planned.

Workers are started on first use with the ``spawn`` method (the poller has threads: fork
would copy their locks), and a worker that dies (a parser crash) fails only the feed it was
parsing; the pool is then replaced. Like every ``spawn`` pool, a worker imports the parent's
main module: a script that opens the app must keep its work under
``if __name__ == "__main__":`` (``bot/__main__.py`` does), or set POLICYBOT_PARSE_WORKERS=0.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from bot.errors import ParseError
from bot.model import Match
from bot.parse import ParsedFeed, Parser, parse_feed
from bot.rules import RuleSet

__all__ = ["Matched", "ParseFailure", "ParsePool", "auto_workers", "parse_job"]


def auto_workers() -> int:
    """One worker per core beyond the poller's own, at most 4; none on one core."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A ParseError's message (exceptions with keyword-only fields do not pickle back)."""

    message: str


@dataclass(frozen=True, slots=True)
class Matched:
    """A parsed document with each entry's matches (``matches[i]`` for ``feed.entries[i]``),
    found with the rules of version ``rules_version``."""

    feed: ParsedFeed
    rules_version: int
    matches: tuple[tuple[Match, ...], ...]


# A worker's rules: (version, rule set), set by its initializer.
_RULES: tuple[int, RuleSet] | None = None


def _start_worker(parent: int, rules: tuple[int, bytes] | None = None) -> None:
    """Worker initializer: take the pool's rules, and end when the poller's process is
    gone. A poller killed with SIGKILL cannot stop its pool, and an idle worker would
    otherwise wait for work forever (it holds its own end of the task queue)."""
    global _RULES
    if rules is not None:
        version, blob = rules
        _RULES = (version, pickle.loads(blob))
        assert _RULES[1].engine is not None  # compiled here, not by the first document

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="watch-poller", daemon=True).start()


def parse_job(
    body: bytes, url: str, headers: Mapping[str, str], language: str | None,
    now: datetime, parser: Parser, feed: tuple[str, Sequence[str]] | None = None,
) -> ParsedFeed | Matched | ParseFailure:
    """What a worker runs: ``parse_feed``, with its ParseError returned as a value; then,
    given the ``feed``'s name and tags and when the worker has rules, every entry's
    matches."""
    try:
        parsed = parse_feed(body, url=url, headers=headers, language=language, now=now,
                            parser=parser)
    except ParseError as exc:
        return ParseFailure(exc.message)
    if feed is None or _RULES is None:
        return parsed
    version, rules = _RULES
    name, tags = feed
    return Matched(parsed, version, tuple(
        tuple(rules.match(entry, feed_name=name, feed_tags=tags)) for entry in parsed.entries))


class ParsePool:
    """``workers`` processes running :func:`parse_job`; use as a context manager."""

    def __init__(self, workers: int, parser: Parser = "feedparser") -> None:
        if workers < 1:
            raise ValueError("a ParsePool needs at least one worker; parse inline instead")
        self.workers = workers
        self.parser = parser
        self._executor: ProcessPoolExecutor | None = None
        self._rules: RuleSet | None = None  # what new workers match with …
        self._version = 0  # … under this version
        self._blob: bytes | None = None

    def use_rules(self, rules: RuleSet) -> None:
        """Match with ``rules`` from the next document on. A rule set the workers do not
        have yet (a reload) starts new workers with it; documents already submitted finish
        in the old ones, and their results name the old version."""
        if rules is self._rules:
            return
        self._rules = rules
        self._version += 1
        # Only the declarations travel: each worker compiles its own engine.
        self._blob = pickle.dumps(RuleSet(rules.rules, rules.lists, rules.warnings))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=False)
            self._executor = None

    def matched_with(self, outcome: Matched) -> RuleSet | None:
        """The rule set a result was matched with, if it is the pool's current one."""
        return self._rules if outcome.rules_version == self._version else None

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, body: bytes, *, url: str, headers: Mapping[str, str], language: str | None,
        now: datetime, feed: tuple[str, Sequence[str]] | None = None,
    ) -> Future[ParsedFeed | Matched | ParseFailure]:
        """Parse ``body``; with ``feed`` (its name and tags) and rules (:meth:`use_rules`),
        match its entries too."""
        for attempt in (1, 2):
            if self._executor is None:
                rules = (self._version, self._blob) if self._blob is not None else None
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker, initargs=(os.getpid(), rules))
            try:
                return self._executor.submit(
                    parse_job, body, url, dict(headers), language, now, self.parser,
                    (feed[0], tuple(feed[1])) if feed is not None and self._blob else None)
            except BrokenProcessPool:
                if attempt == 2:
                    raise  # a new pool that breaks at once: not a document's fault
                self._restart()  # a worker died since the last document: start afresh
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def result(url: str, future: Future[ParsedFeed | Matched | ParseFailure]
               ) -> ParsedFeed | Matched:
        """The parsed feed (with its matches); ParseError for a document that is not a feed,
        or when the worker died parsing it (call :meth:`recover` then)."""
        try:
            outcome = future.result()
        except BrokenProcessPool as exc:
            raise ParseError(url, "the parser process died reading this document") from exc
        if isinstance(outcome, ParseFailure):
            raise ParseError(url, outcome.message)
        return outcome

    def recover(self) -> None:
        """Replace a pool whose worker died; documents in flight in it fail."""
        if self._executor is not None and getattr(self._executor, "_broken", False):
            self._restart()

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
