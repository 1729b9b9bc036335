"""Container healthcheck for the lab services: exit 0 only when GET /health answers 200.

A file rather than `python -c "..."` because podman 4.3 splits healthcheck arguments on
spaces, and slim images have no curl. /health answers 503 while the service has no broker
connection, which urlopen raises as an error, so "healthy" means "up and connected".
"""

import os
import sys
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('PORT', '5001')}/health"

try:
    with urllib.request.urlopen(URL, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:  # URLError and HTTPError are OSErrors
    print(f"{URL}: {exc}", file=sys.stderr)
    sys.exit(1)
