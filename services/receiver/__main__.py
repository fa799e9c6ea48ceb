"""`sms-receiver`: the receiver under uvicorn, one process (scale by running more processes or
containers; see docs/architecture.md, "Receiver", for why and what was measured).

On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish; the
lifespan then commits whatever the group-commit flusher has taken and closes the pool.
"""

from __future__ import annotations

import sys

import uvicorn

from services.receiver.api import create_app
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
    setup_tracing(config.service_name, config.otlp_endpoint)
    uvicorn.run(
        create_app(config), host=config.http_host, port=config.port, log_config=None,
        access_log=False, server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
