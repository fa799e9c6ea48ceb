"""A stand-in for Jaeger's OTLP/HTTP collector, for CI on a machine that cannot pull Jaeger.

POST /v1/traces (protobuf, as the services' exporter sends it) is decoded and kept in memory;
GET /traces answers {trace_id: [span names]}; GET / answers 200 (the healthcheck). Runs in the
gateway's own image, whose OpenTelemetry packages bring the protobuf classes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SPANS: defaultdict[str, list[str]] = defaultdict(list)
LOCK = Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        with LOCK:
            for resource_spans in export.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        SPANS[span.trace_id.hex()].append(span.name)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        with LOCK:
            answer = json.dumps(SPANS if self.path == "/traces" else {}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per export would drown the CI log."""


if __name__ == "__main__":
    # PID 1 in its container: without a handler SIGTERM would be ignored until the stop timeout.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ.get("OTLP_SINK_PORT", "4318"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104
