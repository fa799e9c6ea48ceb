"""One way to run a service: its entry point, its process model, and its supervised tasks.

`main(config_class, "package.module:create_app")` is the whole body of each `sms-*` entry point:
it loads the bootstrap configuration (exit 2 with one line naming what is wrong), configures
logging once, then serves the app

* in one uvicorn process when `config.process_count` is 1;
* otherwise with gunicorn's master forking that many uvicorn workers on one port, configured here
  in code (no shell, no config file). Each worker builds its app after the fork (`preload_app`
  stays off), so each has its own pools and background tasks, all in its lifespan.

The app factory is named as a string and imported only once the process model is chosen:
prometheus_client's multiprocess mode must be set up before its first import. Every worker
writes its samples to files in a private directory (made fresh, mode 0700) that `/metrics`
(sms_gateway.http.metrics_payload) merges; a dead worker's live gauges are dropped through
gunicorn's child_exit hook, and the master removes the directory when it exits.

SIGTERM: uvicorn stops accepting, lets requests in flight finish (`DRAIN_SECONDS`), then runs
the lifespan's end (the receiver commits what its flusher took, the validator finishes or rolls
back its batch). With workers, the master passes SIGTERM on and SIGKILLs a worker still alive
after `GRACEFUL_TIMEOUT_SECONDS`, inside the 30 s a container runtime allows.

Background tasks (the validator's engine, the receiver's flusher, settings refreshers) run under
the `Supervisor` their app's lifespan makes and puts in its state (sms_gateway/lifespan.py): a
task that dies of an exception is logged as critical, makes `/ready` false through
`Supervisor.healthy`, and stops the process, which then exits 1 (a gunicorn worker is replaced by
its master). A process is never left half alive.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any, Final

from sms_gateway.config import BootstrapConfig, load_config
from sms_gateway.errors import ConfigurationError
from sms_gateway.logging import configure_logging
from sms_gateway.telemetry import setup_tracing

GRACEFUL_TIMEOUT_SECONDS: Final = 25
# Requests in flight get this long; the rest of GRACEFUL_TIMEOUT_SECONDS is for the lifespan's end.
DRAIN_SECONDS: Final = 20
METRICS_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
EXIT_CONFIGURATION: Final = 2
EXIT_FATAL: Final = 1
# New containers between two collections of the youngest generation (CPython's default: 700).
YOUNG_GENERATION_THRESHOLD: Final = 10_000

logger = logging.getLogger(__name__)

# The errors of background tasks that died in this process (see `fail_process`).
_fatal: list[BaseException] = []


def fail_process(error: BaseException) -> None:
    """A background task died of a bug: stop this process the graceful way (its lifespan still
    closes what it opened) and make it exit non-zero."""
    _fatal.append(error)
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """The background tasks of one app; all must be alive for the app to be ready."""

    def __init__(self, on_fatal: Callable[[BaseException], None] = fail_process) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._on_fatal = on_fatal

    def start(self, coroutine: Any, *, name: str) -> asyncio.Task[Any]:
        return self.watch(asyncio.create_task(coroutine, name=name))

    def watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Supervise a task started elsewhere (a component that owns its own task)."""
        task.add_done_callback(self._finished)
        self._tasks.append(task)
        return task

    @property
    def healthy(self) -> bool:
        return all(not task.done() for task in self._tasks)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        logger.critical(
            "background task died; stopping", exc_info=error, extra={"task": task.get_name()}
        )
        self._on_fatal(error)


def main(config_class: type[BootstrapConfig], factory: str) -> int:
    """The body of an entry point; returns the exit status."""
    try:
        config = load_config(config_class)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)  # logging is not configured yet
        return EXIT_CONFIGURATION
    configure_logging(config.service_name, fmt=config.log_format)
    if config.process_count > 1:
        _serve_with_workers(config, factory)
    else:
        _serve_one_process(config, factory)
    return EXIT_FATAL if _fatal else 0


def _load_app(config: BootstrapConfig, factory: str) -> Any:
    """Import the app factory and build the app, tracing first (its exporter thread belongs to
    the process that uses it).

    Then every object made so far (modules, the app, its routes and models: ~70,000) leaves the
    garbage collector's view (`gc.freeze`): they live as long as the process, and each full
    collection walked them all. A receiver's batch makes thousands of containers, enough for a
    full collection every few dozen batches; with them walked, collecting took ~20 % of the
    receiver's CPU under the batch benchmark. And the youngest generation is collected every
    `YOUNG_GENERATION_THRESHOLD` new containers rather than 700: a batch's ~4,000 (its items'
    dicts and rows) live as long as its request, so at 700 a collection came every fifth of a
    batch, found most of them alive and promoted them, to be walked again in the older
    generations (4.2 against 4.6 ms of receiver CPU per 1000 SMS, four alternating pairs).
    """
    module_name, _, function_name = factory.partition(":")
    create_app = getattr(importlib.import_module(module_name), function_name)
    setup_tracing(config.service_name, config.otlp_endpoint, sample_ratio=config.trace_sample_ratio)
    app = create_app(config)
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    return app


def _serve_one_process(config: BootstrapConfig, factory: str) -> None:
    import uvicorn  # noqa: PLC0415 (after the process model is chosen)

    from sms_gateway.http_limits import uvicorn_options  # noqa: PLC0415 (imports uvicorn)

    uvicorn.run(
        _load_app(config, factory),
        host=config.http_host,
        port=config.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        **uvicorn_options(config),  # slow and idle clients are bounded
    )


def _serve_with_workers(config: BootstrapConfig, factory: str) -> None:
    """Serve with `config.process_count` worker processes until SIGTERM."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            f"prometheus_client was imported before {METRICS_DIR_VARIABLE} was "
            "set: its samples would not be shared between workers"
        )
    metrics_dir = tempfile.mkdtemp(prefix=f"{config.service_name}-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir
    master_pid = os.getpid()
    try:
        from sms_gateway import workers  # noqa: PLC0415 (imports gunicorn only when needed)

        workers.WorkersApplication(config, lambda: _load_app(config, factory)).run()
    finally:
        # A worker leaves gunicorn by a SystemExit raised through this same stack (it was
        # forked inside it): only the master removes the directory.
        if os.getpid() == master_pid:
            shutil.rmtree(metrics_dir, ignore_errors=True)
