"""Several receiver processes on one port (`http_workers` > 1): gunicorn's master forks uvicorn
workers, configured here in code so that `sms-receiver` stays the one entry point.

Each worker builds its own app after the fork (`preload_app` stays off), so each has its own
pool, group-commit flusher and settings refresher, all in its lifespan. Group commit then
batches per worker: two workers make two queues, each flushing its own multi-row INSERTs.

SIGTERM: the master stops listening and sends SIGTERM to every worker; a worker stops
accepting, lets requests in flight finish (up to `WORKER_DRAIN_SECONDS`), then its lifespan
commits every SMS its flusher has taken and closes its pool. The master SIGKILLs a worker still
alive after `GRACEFUL_TIMEOUT_SECONDS`, which stays under the 30 s a container runtime allows.

Metrics: prometheus_client's multiprocess mode. Every worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, which `/metrics` (sms_gateway.http.metrics_payload) merges. The
directory is private to this master, made fresh (so empty) before anything imports
prometheus_client, since that import fixes where samples go; a dead worker's live gauges are
dropped through gunicorn's child_exit hook, and the directory is removed when the master exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import warnings
from typing import Any, Final

# gunicorn ships no type information: its objects are Any here.
from gunicorn import glogging  # type: ignore[import-untyped]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from services.receiver.config import ReceiverConfig
from sms_gateway.http_limits import uvicorn_options
from sms_gateway.telemetry import setup_tracing

with warnings.catch_warnings():
    # uvicorn marks its gunicorn worker deprecated in favour of the separate `uvicorn-worker`
    # distribution (the same class); this one ships with uvicorn and needs no new dependency.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker

GRACEFUL_TIMEOUT_SECONDS: Final = 25
# Requests in flight get this long; the rest of GRACEFUL_TIMEOUT_SECONDS is for the lifespan's
# last flush and closing the pool.
WORKER_DRAIN_SECONDS: Final = 20
METRICS_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger(__name__)


class ReceiverWorker(UvicornWorker):
    """uvicorn in a gunicorn worker, with the options `sms-receiver` uses in one process."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (UvicornWorker's own class attribute)
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "server_header": False,
        "access_log": False,
        "timeout_graceful_shutdown": WORKER_DRAIN_SECONDS,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # UvicornWorker points uvicorn's loggers at gunicorn's handlers, which RootLogger
        # removes: let them reach the root handler of configure_logging instead.
        for name in ("uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True


def _worker_class(config: ReceiverConfig) -> type[ReceiverWorker]:
    """ReceiverWorker with the slow-client limits of `config` (sms_gateway.http_limits)."""
    options = {**ReceiverWorker.CONFIG_KWARGS, **uvicorn_options(config)}
    return type("ReceiverWorker", (ReceiverWorker,), {"CONFIG_KWARGS": options})


class RootLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own messages (workers booting, exiting) through the root handler, in the
    service's log format, instead of gunicorn's stderr handler and format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True


def _mark_worker_dead(_: Any, worker: Any) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415 (only once the directory is set)

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class ReceiverApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from `ReceiverConfig` rather than from a command line or file."""

    def __init__(self, config: ReceiverConfig) -> None:
        self._config = config
        super().__init__(prog=config.service_name)

    def load_config(self) -> None:
        host = self._config.http_host
        settings: dict[str, Any] = {
            "bind": f"[{host}]:{self._config.port}"
            if ":" in host
            else f"{host}:{self._config.port}",
            "workers": self._config.http_workers,
            "worker_class": _worker_class(self._config),
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "child_exit": _mark_worker_dead,
            "logger_class": RootLogger,
            "proc_name": self._config.service_name,
            # gunicorn's control socket defaults to one path per user ($HOME/.gunicorn): two
            # receivers on a host would fight over it, and nothing here uses it.
            "control_socket_disable": True,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        """Runs in each worker after the fork: the exporter's thread and the app's metrics
        are made in the process that uses them."""
        from services.receiver.api import create_app  # noqa: PLC0415 (see run: import order)

        setup_tracing(self._config.service_name, self._config.otlp_endpoint)
        return create_app(self._config)


def run(config: ReceiverConfig) -> None:
    """Serve with `config.http_workers` worker processes until SIGTERM (raises SystemExit)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            f"prometheus_client was imported before {METRICS_DIR_VARIABLE} was "
            "set: its samples would not be shared between workers"
        )
    metrics_dir = tempfile.mkdtemp(prefix=f"{config.service_name}-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir
    master_pid = os.getpid()
    try:
        ReceiverApplication(config).run()
    finally:
        # A worker leaves gunicorn by a SystemExit raised through this same stack (it was
        # forked inside it): only the master removes the directory.
        if os.getpid() == master_pid:
            shutil.rmtree(metrics_dir, ignore_errors=True)
