"""Structured logging, configured once by each entry point.

Records carry their `extra={...}` fields (sms_uuid, batch_id, check, setting_key, ...) and the
current trace and span ids. `set_level` applies the `log_level` setting at run time.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal

from opentelemetry import trace

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS: Final = frozenset(
    set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)))
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's coloured duplicate
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields.setdefault("trace_id", format(span_context.trace_id, "032x"))
        fields.setdefault("span_id", format(span_context.span_id, "016x"))
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _extras(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def configure_logging(
    service: str, *, fmt: Literal["json", "text"] = "json", level: str = "INFO"
) -> None:
    """Send every log record to stderr in the chosen format; call once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Uvicorn's access log duplicates our request metrics and spans.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def set_level(level: str) -> None:
    root = logging.getLogger()
    if logging.getLevelName(root.level) != level:
        root.setLevel(level)
        logging.getLogger(__name__).info("log level changed", extra={"log_level": level})
