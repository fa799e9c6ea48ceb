"""`sms-receiver`: the receiver's one entry point.

With `http_workers` = 1 it is one uvicorn process; with more (the default: one per core),
gunicorn's master with that many uvicorn workers (sms_gateway/service.py), each with its own pool
and group-commit flusher, sharing one port. docs/architecture.md, "Receiver", says when to use
which.

On SIGTERM uvicorn stops accepting connections and lets the requests in flight finish; the
lifespan then commits whatever the group-commit flusher has taken and closes the pool.

Nothing here imports prometheus_client before the process model is chosen: with several workers
its multiprocess directory must be set before the first import.
"""

from __future__ import annotations

import sys

from services.receiver.config import ReceiverConfig
from sms_gateway import service


def main() -> int:
    return service.main(ReceiverConfig, "services.receiver.api:create_app")


if __name__ == "__main__":
    sys.exit(main())
