"""Prometheus metrics, in one registry of policybot's own (prometheus-client).

Counters and histograms are updated where the work happens (pipeline, delivery, digest);
gauges that describe the database (outbox depth, failing feeds) are read at scrape time by a
collector, so every replica reports the same truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter("policybot_polls", "Feed polls by outcome (ok, not_modified, failed).",
                ["outcome"], registry=REGISTRY)
FETCH_SECONDS = Histogram("policybot_fetch_seconds", "Time to fetch and parse one feed.",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                          registry=REGISTRY)
ENTRIES = Counter("policybot_entries_stored", "Entries stored, new or changed.", ["kind"],
                  registry=REGISTRY)
MATCHES = Counter("policybot_matches", "Rule matches on new or changed entries.", ["rule"],
                  registry=REGISTRY)
ALERTS = Counter("policybot_alerts", "Alert deliveries by outcome (sent, retry, failed).",
                 ["outcome"], registry=REGISTRY)
DELIVERY_LATENCY = Histogram(
    "policybot_delivery_latency_seconds", "From the entry first seen to Slack accepting it.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600), registry=REGISTRY)
RULE_RELOAD_ERRORS = Counter("policybot_rule_reload_errors",
                             "Rule reloads refused because a file was invalid.",
                             registry=REGISTRY)
DIGEST_SENDS = Counter("policybot_digest_sends", "Digest emails by outcome.", ["outcome"],
                       registry=REGISTRY)


class StateCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, read: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self.read()
        outbox = GaugeMetricFamily("policybot_outbox", "Alerts in the outbox by status.",
                                   labels=["status"])
        for status, n in sorted(state.get("outbox", {}).items()):
            outbox.add_metric([status], n)
        yield outbox
        feeds = GaugeMetricFamily("policybot_feeds", "Feeds by health.", labels=["health"])
        for health, n in sorted(state.get("feeds", {}).items()):
            feeds.add_metric([health], n)
        yield feeds
