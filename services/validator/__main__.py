"""`sms-validator`: the batch engine and its operational endpoints in one process."""

from __future__ import annotations

import sys

import uvicorn

from services.validator.app import create_app
from services.validator.config import ValidatorConfig
from sms_gateway.config import load_config
from sms_gateway.errors import ConfigurationError
from sms_gateway.logging import configure_logging
from sms_gateway.telemetry import setup_tracing


def main() -> None:
    try:
        config = load_config(ValidatorConfig)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)  # logging is not configured yet
        sys.exit(2)
    configure_logging(config.service_name, fmt=config.log_format)
    setup_tracing(config.service_name, config.otlp_endpoint)
    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(error: BaseException) -> None:
        fatal.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_fatal=on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    server.run()
    if fatal:
        sys.exit(1)


if __name__ == "__main__":
    main()
