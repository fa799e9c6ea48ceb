"""The receiver's own metrics (request counts and latency come from sms_gateway.http)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SMS_STORED = Counter(
    "sms_receiver_stored_total", "SMS committed to input_sms, by source.", ["source"]
)
IDEMPOTENT_REPEATS = Counter(
    "sms_receiver_idempotent_repeats_total",
    "Deliveries answered from an earlier one with the same key (nothing stored), by source.",
    ["source"],
)
FLUSH_ROWS = Histogram(
    "sms_receiver_flush_rows",
    "Rows in one group-committed INSERT.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
FLUSH_SECONDS = Histogram(
    "sms_receiver_flush_duration_seconds",
    "Time of one group commit, retries included, from its first attempt to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UNAVAILABLE = Counter(
    "sms_receiver_unavailable_total",
    "Requests answered 503 because the database could not be reached after the retries.",
)
STORE_FAILURES = Counter(
    "sms_receiver_store_failures_total",
    "Failures to store, their requests answered 503, by cause: outage (a group or batch whose "
    "transient fault outlasted the retries), deadline (a group, batch or queued request that "
    "reached the answer bound), error (anything else, logged with its traceback).",
    ["cause"],
)
REFUSED = Counter("sms_receiver_refused_total", "Requests refused, by reason.", ["reason"])
