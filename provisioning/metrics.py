"""The service's Prometheus metrics (counters and histograms), shared by every edge."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from provisioning import liveness

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
    "Okta events processed, by outcome: applied, duplicate, stale, ignored, pending, parked, "
    "preview",
    ["outcome"],
)
OKTA_EVENTS_CLAMPED = Counter(
    "okta_events_clamped",
    "Okta events published further in the future of their receipt than the allowed skew, "
    "ordered at their receipt instead, by source (okta-hook, okta-sync)",
    ["source"],
)
DELIVERY_ACK_SECONDS = Histogram(
    "delivery_ack_seconds",
    "Time from committing a change to a target acknowledging its message, by target",
    ["target"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
DELIVERY_ATTEMPTS = Counter(
    "delivery_attempts",
    "Attempts to deliver outbox messages, by target and outcome (delivered, failed)",
    ["target", "outcome"],
)
DELIVERY_ERRORS = Counter(
    "delivery_errors",
    "Failed delivery attempts, by target and kind: http_status, bad_answer, timeout, connect,"
    " tls, network, egress_refused, sender_error",
    ["target", "kind"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template ((unmatched): no route) and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_SECONDS = Histogram(
    "job_duration_seconds",
    "Time a scheduled job's run took in this process, by job and outcome",
    ["job", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
SCHEDULER_LEADER = Gauge(
    "scheduler_leader",
    "1 while this process's job worker holds the scheduler leadership",
)
OFFBOARDING_COMMIT_SECONDS = Histogram(
    "offboarding_commit_seconds",
    "Time from receiving an offboarding request to its revocations being committed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class BackgroundLoops(Collector):
    """Each background loop of this process: its last heartbeat, and whether it goes round."""

    def collect(self):
        beats = GaugeMetricFamily(
            "background_heartbeat_timestamp_seconds",
            "When each background loop of this process last beat (Unix time)",
            labels=["loop"],
        )
        alive = GaugeMetricFamily(
            "background_alive",
            "1 while a background loop goes round; 0 once it stopped or stalled",
            labels=["loop"],
        )
        now = time.monotonic()
        worst: dict[str, tuple[float, int]] = {}
        for loop in liveness.loops():
            beat, up = worst.get(loop.name, (loop.beaten_at, 1))
            worst[loop.name] = (min(beat, loop.beaten_at), up and int(loop.fault(now) is None))
        for name, (beat, up) in worst.items():
            beats.add_metric([name], beat)
            alive.add_metric([name], up)
        yield beats
        yield alive


REGISTRY.register(BackgroundLoops())
