"""Prometheus metrics of the gateway and its online tracer, served at /metrics.

One registry for the process; label sets are small and fixed (endpoint,
status, decision) so cardinality never grows with accounts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "distillguard_requests",
    "Requests handled, by endpoint, HTTP status and decision.",
    ["endpoint", "status", "decision"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "distillguard_request_seconds",
    "Time from request to last byte, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
REFUSALS = Counter(
    "distillguard_refusals",
    "Requests a limit or a tier refused (or would have, in shadow mode), by the limit's scope "
    "(key, account, org; tier for a blocked account), its kind (requests, tokens, "
    "tokens_per_day, concurrency; block), the account's tier and the mode.",
    ["scope", "kind", "tier", "mode"],
    registry=REGISTRY,
)
TOKENS = Counter("distillguard_tokens", "Tokens served, by kind.", ["kind"], registry=REGISTRY)
IN_FLIGHT = Gauge(
    "distillguard_in_flight_requests", "Requests admitted and not yet finished.", registry=REGISTRY
)
UPSTREAM_ERRORS = Counter(
    "distillguard_upstream_errors", "Upstream failures, by kind.", ["kind"], registry=REGISTRY
)
EVENT_QUEUE_DEPTH = Gauge(
    "distillguard_event_queue_depth", "Events waiting for the writer.", registry=REGISTRY
)
EVENT_WRITER_ALIVE = Gauge(
    "distillguard_event_writer_alive",
    "1 while the event writer thread runs; 0 means events are no longer stored.",
    registry=REGISTRY,
)
EVENTS_WRITTEN = Counter("distillguard_events_written", "Events stored.", registry=REGISTRY)
EVENTS_DROPPED = Counter(
    "distillguard_events_dropped",
    "Events lost: queue full, store down at shutdown, a row the store refused, or a failed batch.",
    registry=REGISTRY,
)
EVENTS_SAMPLED_OUT = Counter(
    "distillguard_events_sampled_out",
    "Unauthenticated requests answered but not stored (past their events-per-second rate).",
    registry=REGISTRY,
)
LIMITER_ERRORS = Counter(
    "distillguard_limiter_errors",
    "Admissions the shared limiter (Redis) could not answer: 503s, or fallback admissions.",
    registry=REGISTRY,
)
EVENT_WRITE_ERRORS = Counter(
    "distillguard_event_write_errors", "Failed batch writes (retried).", registry=REGISTRY
)
TRACING_TIERS = Counter(
    "distillguard_tracing_tier_changes",
    "Tiers raised by online tracing, by tier and mode (enforced, or shadow: only logged).",
    ["tier", "mode"],
    registry=REGISTRY,
)


def snapshot() -> list[dict]:
    """The registry's current values for the console: each metric's help and its samples
    (counters' totals, gauges, histograms' counts and sums; no buckets or creation times)."""
    found = []
    for family in REGISTRY.collect():
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value}
            for s in family.samples
            if not s.name.endswith(("_created", "_bucket"))
        ]
        found.append({"name": family.name, "help": family.documentation, "samples": samples})
    return found
