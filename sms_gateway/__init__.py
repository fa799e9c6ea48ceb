"""The shared core of the SMS gateway: what every service imports.

Bootstrap configuration (`config`), run-time settings (`settings`), database and Redis access
(`db`, `redis`), retries, logging, telemetry and the operational endpoints (`ops`). Nothing in
this package creates a pool, a logger configuration or a tracer at import time: the entry
points and the tests build their own.
"""
