"""How long silent connections hold back a new request, on a running service.

Opens N connections that send nothing, then times `GET /healthz` on a new one, for each N given; waits for
the server to drop the silent ones (FRAUD_CLIENT_TIMEOUT_S) between rounds. Start the service first:

    FRAUD_HOME=... fraud-service serve --port 8770 &
    .venv/bin/python bench/silent_clients.py --port 8770 --counts 0 40 100 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import time


def healthz_seconds(host: str, port: int, timeout: float) -> float:
    """Seconds from opening a connection to reading /healthz's whole answer (raises unless it is a 200)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"/healthz answered {answer.status}")
    finally:
        conn.close()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 40, 100, 200], help="silent connections per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per count (the median is reported)")
    parser.add_argument("--drop-wait", type=float, default=2.0,
                        help="seconds to wait after a round for the server to drop the closed connections")
    args = parser.parse_args()
    figures = {}
    for count in args.counts:
        times = []
        for _ in range(args.repeats):
            silent = [socket.create_connection((args.host, args.port), timeout=30) for _ in range(count)]
            try:
                times.append(healthz_seconds(args.host, args.port, timeout=60))
            finally:
                for conn in silent:
                    conn.close()
            time.sleep(args.drop_wait if count else 0)  # the server reads each close (an end of file) and drops them
        figures[count] = round(statistics.median(times), 3)
        print(f"{count:>5} silent connections: /healthz in {figures[count]:.3f} s (median of {len(times)})", flush=True)
    print(json.dumps({"healthz_seconds_by_silent_connections": figures}))


if __name__ == "__main__":
    main()
