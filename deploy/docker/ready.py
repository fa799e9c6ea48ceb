"""Container healthcheck of a gateway service: exit 0 when its `/ready` answers 200.

The port is the service's own SMSGW_HTTP_PORT; the standard library only, so that the check
costs no import of the service. (A script rather than `python3 -c '...'`: some compose
implementations re-quote a healthcheck's arguments and break inline code.)
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SMSGW_HTTP_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
