"""`sms-receiver`: the receiver's one entry point.

With `http_workers` = 1 (the default) it is one uvicorn process; with more, gunicorn's master
with that many uvicorn workers (services/receiver/gunicorn_app.py), each with its own pool and
group-commit flusher, sharing one port. docs/architecture.md, "Receiver", says when to use which.

On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish; the
lifespan then commits whatever the group-commit flusher has taken and closes the pool.

Nothing here imports prometheus_client before the process model is chosen: with several workers
its multiprocess directory must be set before the first import.
"""

from __future__ import annotations

import sys

from services.receiver.config import ReceiverConfig
from sms_gateway.config import load_config
from sms_gateway.errors import ConfigurationError
from sms_gateway.logging import configure_logging
from sms_gateway.telemetry import setup_tracing

GRACEFUL_SHUTDOWN_SECONDS = 25


def main() -> int:
    try:
        config = load_config(ReceiverConfig)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(config.service_name, fmt=config.log_format)
    if config.http_workers > 1:
        from services.receiver import gunicorn_app  # noqa: PLC0415

        gunicorn_app.run(config)
        return 0
    _serve_one_process(config)
    return 0


def _serve_one_process(config: ReceiverConfig) -> None:
    import uvicorn  # noqa: PLC0415

    from services.receiver.api import create_app  # noqa: PLC0415
    from sms_gateway.http_limits import uvicorn_options  # noqa: PLC0415

    setup_tracing(config.service_name, config.otlp_endpoint)
    uvicorn.run(
        create_app(config),
        host=config.http_host,
        port=config.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **uvicorn_options(config),
    )


if __name__ == "__main__":
    sys.exit(main())
