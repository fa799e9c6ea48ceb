"""An OTLP/HTTP trace collector stand-in for benchmarks: accepts `POST /v1/traces` and answers
200, as a collector does, so that the services pay their whole export cost.

    .venv/bin/python -m bench.otlp_sink --port 4318 [--decode]

With `--decode` each request is parsed with opentelemetry-proto (costing this process, not the
service's) and the spans counted; on SIGTERM or SIGINT it prints requests and spans received.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.bytes = 0


def handler(counts: Counts, decode: bool) -> type[BaseHTTPRequestHandler]:
    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            spans = 0
            if decode:
                request = ExportTraceServiceRequest.FromString(body)
                spans = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
            with counts.lock:
                counts.requests += 1
                counts.spans += spans
                counts.bytes += len(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(_OK)))
            self.end_headers()
            self.wfile.write(_OK)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Sink


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--decode", action="store_true")
    args = parser.parse_args()
    counts = Counts()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(counts, args.decode))

    def stop(_: int, __: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    print(
        f"otlp sink: {counts.requests} requests, {counts.spans} spans, {counts.bytes} bytes",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
