"""The service's Prometheus metrics (counters and histograms), shared by every edge."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HOOK_DELIVERIES = Counter(
    "okta_hook_deliveries",
    "Okta event hook deliveries received, by result",
    ["result"],
)
HOOK_ACK_SECONDS = Histogram(
    "okta_hook_ack_seconds",
    "Time from receiving an Okta delivery to acknowledging it (stored durably)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OKTA_EVENTS = Counter(
    "okta_events",
    "Okta events processed, by outcome: applied, duplicate, stale, ignored",
    ["outcome"],
)
