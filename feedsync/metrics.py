"""Prometheus metrics (prefix ``feedsync_``); names are a public interface."""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from feedsync import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (memory, CPU, open descriptors) and python_info: what an exporter is
# expected to have, and what tells a leak from a big feed.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# The supplier label of CyberTrace requests that belong to no supplier (the
# version probe, listing suppliers or tags, creating a tag): "" would read as
# a missing label in PromQL.
NO_SUPPLIER = "-"

BUILD_INFO = Gauge(
    "feedsync_build_info",
    "Always 1; the running feedsync's version and Python version as labels",
    ["version", "python"],
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
CONFIG_RELOAD_OK = Gauge(
    "feedsync_config_last_reload_successful",
    "1 if the configuration last loaded (at start or on SIGHUP) is in use, 0 if it was refused",
    registry=REGISTRY,
)
CONFIG_RELOAD_TIME = Gauge(
    "feedsync_config_last_reload_success_timestamp_seconds",
    "Unix time the configuration in use was loaded",
    registry=REGISTRY,
)

FEED_LAST_SUCCESS = Gauge(
    "feedsync_feed_last_success_timestamp_seconds",
    "Unix time of the feed's last successful cycle",
    ["feed"],
    registry=REGISTRY,
)
FEED_AGE = Gauge(
    "feedsync_feed_age_seconds",
    "Seconds since the feed's last successful cycle (computed when scraped)",
    ["feed"],
    registry=REGISTRY,
)
FEED_LAST_CHANGE = Gauge(
    "feedsync_feed_last_change_timestamp_seconds",
    "Unix time of the feed's last run that changed its content",
    ["feed"],
    registry=REGISTRY,
)
FEED_UPSTREAM_STALE = Gauge(
    "feedsync_feed_upstream_stale",
    "1 while the feed's content has not changed for longer than its expect_change_within",
    ["feed"],
    registry=REGISTRY,
)
FEED_INDICATORS = Gauge(
    "feedsync_feed_indicators", "Indicators in the feed's snapshot", ["feed"], registry=REGISTRY
)
FEED_NEVER_SUCCEEDED = Gauge(
    "feedsync_feed_never_succeeded",
    "1 while the feed has been tried and no cycle of it has ever succeeded",
    ["feed"],
    registry=REGISTRY,
)
FEED_INTERVAL = Gauge(
    "feedsync_feed_interval_seconds",
    "Seconds between the feed's runs (a cron line: the longest gap of its next runs)",
    ["feed"],
    registry=REGISTRY,
)
FEED_NEXT_RUN = Gauge(
    "feedsync_feed_next_run_timestamp_seconds",
    "Unix time of the feed's next scheduled run",
    ["feed"],
    registry=REGISTRY,
)
FEED_FETCH = Counter(
    "feedsync_feed_fetch_total",
    "Feed fetches by result (ok, unchanged, held, failed)",
    ["feed", "result"],
    registry=REGISTRY,
)
FEED_HTTP = Counter(
    "feedsync_feed_http_responses_total",
    "HTTP answers feed servers gave, by status code (redirects and 304s included)",
    ["feed", "code"],
    registry=REGISTRY,
)
FEED_RETRIES = Counter(
    "feedsync_feed_fetch_retries_total",
    "Feed requests tried again within a cycle after a failure that may pass",
    ["feed"],
    registry=REGISTRY,
)
FEED_INVALID = Counter(
    "feedsync_feed_invalid_indicators_total",
    "Feed rows skipped as invalid, by reason",
    ["feed", "reason"],
    registry=REGISTRY,
)
FEED_EXCLUDED = Gauge(
    "feedsync_excluded_indicators",
    "Values the feed's last fetch left out by its exclusions, by reason",
    ["feed", "reason"],
    registry=REGISTRY,
)
_EXCLUDED_SEEN: dict[str, set[str]] = {}
FEED_HELD = Gauge(
    "feedsync_feed_held",
    "1 while a shrinking fetch of the feed is held by the shrink guard, or a poisoned one by"
    " the poison guard (a canary value newly listed, growth over max_growth_ratio)",
    ["feed"],
    registry=REGISTRY,
)
FEED_HELD_DELETIONS = Gauge(
    "feedsync_feed_held_deletions",
    "Indicators the held fetch would remove",
    ["feed"],
    registry=REGISTRY,
)
FETCH_DURATION = Histogram(
    "feedsync_feed_fetch_duration_seconds",
    "Time to fetch and store a feed",
    ["feed"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
CYCLE_DURATION = Histogram(
    "feedsync_cycle_duration_seconds",
    "Time for one sync cycle (fetch, store, plan, upload)",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
FEED_FAILING = Gauge(
    "feedsync_feed_failing",
    "1 while the feed's last cycle failed, labelled with where (fetch, parse, store, cybertrace)",
    ["feed", "stage"],
    registry=REGISTRY,
)
CYBERTRACE_UP = Gauge(
    "feedsync_cybertrace_up",
    "1 if the last CyberTrace request got an answer below 500, 0 if not",
    registry=REGISTRY,
)
CYBERTRACE_AUTH_FAILING = Gauge(
    "feedsync_cybertrace_auth_failing",
    "1 from a 401 or 403 answer of CyberTrace until an answer that is neither",
    registry=REGISTRY,
)
CHANGES = Counter(
    "feedsync_changes_total",
    "Indicator changes acknowledged by CyberTrace (op: add, update, delete)",
    ["supplier", "op"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "feedsync_requests_total",
    "CyberTrace requests by method and status code (or 'error')",
    ["supplier", "method", "code"],
    registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "feedsync_request_duration_seconds",
    "CyberTrace request latency",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
RETRIES = Counter(
    "feedsync_request_retries_total", "CyberTrace requests retried", ["method"], registry=REGISTRY
)
BYTES_SENT = Counter(
    "feedsync_bytes_sent_total",
    "Request body bytes sent to CyberTrace",
    ["supplier"],
    registry=REGISTRY,
)
PENDING = Gauge(
    "feedsync_pending_operations",
    "Planned operations not yet acknowledged",
    ["supplier"],
    registry=REGISTRY,
)
REFRESH_DUE = Gauge(
    "feedsync_refresh_due_indicators",
    "Indicators re-sent in the last cycle because their retention was running out",
    ["supplier"],
    registry=REGISTRY,
)
SUPPLIER_RESTORED = Counter(
    "feedsync_supplier_restores_total",
    "Times CyberTrace no longer matched the supplier's canary and feedsync resynced it",
    ["supplier"],
    registry=REGISTRY,
)
STATE_DB_BYTES = Gauge(
    "feedsync_state_db_bytes",
    "Size of the state database file and its WAL after the last cycle",
    registry=REGISTRY,
)
STATE_DB_FREE_BYTES = Gauge(
    "feedsync_state_db_free_bytes",
    "Free pages kept inside the state database after the last cycle",
    registry=REGISTRY,
)
REJECTED = Gauge(
    "feedsync_rejected_indicators",
    "Indicators CyberTrace refused, kept until their content changes",
    ["supplier"],
    registry=REGISTRY,
)


def set_excluded(feed: str, reasons: dict[str, int]) -> None:
    """The feed's excluded counts of its last fetch; a reason it no longer has reads 0."""
    seen = _EXCLUDED_SEEN.setdefault(feed, set())
    seen.update(reasons)
    for reason in seen:
        FEED_EXCLUDED.labels(feed, reason).set(reasons.get(reason, 0))


def feed_response(feed: str, status: int) -> None:
    FEED_HTTP.labels(feed, str(status)).inc()


def count_retry(method: str) -> None:
    RETRIES.labels(method).inc()


def observe_request(method: str, supplier: str, code: str, seconds: float, sent: int) -> None:
    supplier = supplier or NO_SUPPLIER
    answered = code != "error" and int(code) < 500
    CYBERTRACE_UP.set(1 if answered else 0)
    if code in ("401", "403"):
        CYBERTRACE_AUTH_FAILING.set(1)
    elif answered:
        CYBERTRACE_AUTH_FAILING.set(0)
    REQUESTS.labels(supplier, method, code).inc()
    REQUEST_LATENCY.labels(method).observe(seconds)
    if sent:
        BYTES_SENT.labels(supplier).inc(sent)
