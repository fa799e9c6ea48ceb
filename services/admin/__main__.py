"""`sms-admin`: the admin service under uvicorn (one process; scale by running more)."""

from __future__ import annotations

import sys

import uvicorn

from services.admin.app import create_app
from services.admin.config import AdminConfig
from sms_gateway.config import load_config
from sms_gateway.errors import ConfigurationError
from sms_gateway.logging import configure_logging
from sms_gateway.telemetry import setup_tracing


def main() -> None:
    try:
        config = load_config(AdminConfig)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    configure_logging(config.service_name, fmt=config.log_format)
    setup_tracing(config.service_name, config.otlp_endpoint)
    # uvicorn stops on SIGTERM: it finishes the requests in flight, then runs the lifespan's end.
    uvicorn.run(
        create_app(config),
        host=config.http_host,
        port=config.port,
        log_config=None,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
