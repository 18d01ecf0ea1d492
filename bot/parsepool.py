"""Feed parsing in worker processes, so that a cold cycle uses every core (issue 7).

Parsing is pure and CPU-bound (XML, HTML → text, hashing); matching and storing stay in the
poller's process, so each feed's results are still written in one transaction there, its
state with its entries. A pool holds only the documents in flight (a few per worker): the
cycle streams feeds through it rather than holding them::

    fetch (threads) ─▶ ParsePool.submit ─▶ worker: parse_feed ─▶ poller: match, store

Workers are started on first use with the ``spawn`` method (the poller has threads: fork
would copy their locks), and a worker that dies (a parser crash) fails only the feed it was
parsing; the pool is then replaced. Like every ``spawn`` pool, a worker imports the parent's
main module: a script that opens the app must keep its work under
``if __name__ == "__main__":`` (``bot/__main__.py`` does), or set POLICYBOT_PARSE_WORKERS=0.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from bot.errors import ParseError
from bot.parse import ParsedFeed, Parser, parse_feed

__all__ = ["ParseFailure", "ParsePool", "auto_workers", "parse_job"]


def auto_workers() -> int:
    """One worker per core beyond the poller's own, at most 4; none on one core."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A ParseError's message (exceptions with keyword-only fields do not pickle back)."""

    message: str


def _exit_with(parent: int) -> None:
    """Worker initializer: end when the poller's process is gone. A poller killed with
    SIGKILL cannot stop its pool, and an idle worker would otherwise wait for work forever
    (it holds its own end of the task queue)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="watch-poller", daemon=True).start()


def parse_job(
    body: bytes, url: str, headers: Mapping[str, str], language: str | None,
    now: datetime, parser: Parser,
) -> ParsedFeed | ParseFailure:
    """What a worker runs: ``parse_feed``, with its ParseError returned as a value."""
    try:
        return parse_feed(body, url=url, headers=headers, language=language, now=now,
                          parser=parser)
    except ParseError as exc:
        return ParseFailure(exc.message)


class ParsePool:
    """``workers`` processes running :func:`parse_job`; use as a context manager."""

    def __init__(self, workers: int, parser: Parser = "feedparser") -> None:
        if workers < 1:
            raise ValueError("a ParsePool needs at least one worker; parse inline instead")
        self.workers = workers
        self.parser = parser
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, body: bytes, *, url: str, headers: Mapping[str, str], language: str | None,
        now: datetime,
    ) -> Future[ParsedFeed | ParseFailure]:
        for attempt in (1, 2):
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with, initargs=(os.getpid(),))
            try:
                return self._executor.submit(parse_job, body, url, dict(headers), language,
                                             now, self.parser)
            except BrokenProcessPool:
                if attempt == 2:
                    raise  # a new pool that breaks at once: not a document's fault
                self._restart()  # a worker died since the last document: start afresh
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def result(url: str, future: Future[ParsedFeed | ParseFailure]) -> ParsedFeed:
        """The parsed feed; ParseError for a document that is not a feed, or when the worker
        died parsing it (call :meth:`recover` then)."""
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
