"""Several processes of one service on one port: gunicorn's master forking uvicorn workers,
configured in code (sms_gateway/service.py says when and why).

Imported only when a service runs more than one process, after the multiprocess metrics
directory is set (gunicorn and uvicorn's worker are not needed otherwise).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

# gunicorn ships no type information: its objects are Any here.
from gunicorn import glogging  # type: ignore[import-untyped]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from sms_gateway.config import BootstrapConfig
from sms_gateway.http_limits import uvicorn_options
from sms_gateway.service import DRAIN_SECONDS, GRACEFUL_TIMEOUT_SECONDS

with warnings.catch_warnings():
    # uvicorn marks its gunicorn worker deprecated in favour of the separate `uvicorn-worker`
    # distribution (the same class); this one ships with uvicorn and needs no new dependency.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker

logger = logging.getLogger(__name__)


class ServiceWorker(UvicornWorker):
    """uvicorn in a gunicorn worker, with the options a service uses in one process."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (UvicornWorker's own class attribute)
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "server_header": False,
        "access_log": False,
        "timeout_graceful_shutdown": DRAIN_SECONDS,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # UvicornWorker points uvicorn's loggers at gunicorn's handlers, which RootLogger
        # removes: let them reach the root handler of configure_logging instead.
        for name in ("uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True


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


class WorkersApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from a service's configuration rather than a command line or file;
    `load` runs in each worker after the fork."""

    def __init__(self, config: BootstrapConfig, load: Callable[[], Any]) -> None:
        self._config = config
        self._load = load
        super().__init__(prog=config.service_name)

    def load_config(self) -> None:
        host = self._config.http_host
        # The slow-client limits of sms_gateway.http_limits, in every worker.
        worker = type(
            "ServiceWorker",
            (ServiceWorker,),
            {"CONFIG_KWARGS": {**ServiceWorker.CONFIG_KWARGS, **uvicorn_options(self._config)}},
        )
        settings: dict[str, Any] = {
            "bind": f"[{host}]:{self._config.port}"
            if ":" in host
            else f"{host}:{self._config.port}",
            "workers": self._config.process_count,
            "worker_class": worker,
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "child_exit": _mark_worker_dead,
            "logger_class": RootLogger,
            "proc_name": self._config.service_name,
            # gunicorn's control socket defaults to one path per user ($HOME/.gunicorn): two
            # services on a host would fight over it, and nothing here uses it.
            "control_socket_disable": True,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self._load()
