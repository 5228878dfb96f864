"""Webhook delivery under the load benchmark's traffic, and what delivering costs assessments.

The server and the replayed returns are the load benchmark's (`bench/load_bench.py`: gunicorn on loopback,
wrk posting the world's later returns). While wrk runs, a closer closes the riskiest open case through
`/v1/cases/ID/close` every `--close-every` seconds, as an analyst would: each close is a `case.closed`
event and an `assessment.outcome` event per return of the case. A receiver on loopback (in this process)
checks each delivery's signature and notes when it arrived. Runs alternate between webhooks on (a
webhook registered: every event is delivered) and off (none registered: the same closes, nothing to
send), in the order off, on, on, off, off, on, ... so that drift falls on both sides, and every run
starts from the same features (the live facts of the runs before are forgotten).

Reported: delivery latency (arrival minus the event's `created_at`, the commit of the close) p50 / p99 /
max over every event delivered, and assess throughput and p99 with webhooks on and off, per pair and as
the median of the on/off ratios.

    .venv/bin/python bench/webhook_bench.py                       # SQLite evidence, a new world in a temp dir
    .venv/bin/python bench/webhook_bench.py --home /work/bench-load --pairs 3
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_bench import (  # noqa: E402
    CLI,
    ROOT,
    _forget_earlier_runs,
    _free_port,
    _parser,
    measured,
    setup,
    start_server,
    stop_server,
    wrk,
)


class Receiver:
    """Records (event id, seconds from the event's creation to its arrival) of every correctly signed delivery."""

    def __init__(self) -> None:
        self.secret = ""
        self.latencies: dict[str, float] = {}
        self.bad = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                arrived = time.time()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parts = dict(p.split("=", 1) for p in self.headers.get("Fraud-Signature", "").split(",") if "=" in p)
                mac = hmac.new(receiver.secret.encode(), parts.get("t", "").encode() + b"." + body,
                               hashlib.sha256).hexdigest()
                if not hmac.compare_digest(mac, parts.get("v1", "")):
                    receiver.bad += 1
                else:
                    event = json.loads(body)
                    created = dt.datetime.fromisoformat(event["created_at"]).timestamp()
                    receiver.latencies.setdefault(event["id"], arrived - created)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Closer:
    """Closes the riskiest open case every EVERY seconds while it runs (an analyst deciding cases)."""

    def __init__(self, base: str, key: str, every: float) -> None:
        self.base, self.key, self.every = base, key, every
        self.closed = 0
        self.returns = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Closer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            cases = _hook(self.base, self.key, "GET", "/v1/cases?status=open&limit=1")["cases"]
            if cases:
                done = _hook(self.base, self.key, "POST", f"/v1/cases/{cases[0]['case_id']}/close",
                             {"label": "legit", "reason": "webhook bench"})
                self.closed += 1
                self.returns += int(done["assessments"])


def _hook(base: str, key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    pick = lambda q: ordered[min(int(q * len(ordered)), len(ordered) - 1)]  # noqa: E731
    return {"n": len(ordered), "p50_ms": round(1000 * pick(0.5), 1), "p99_ms": round(1000 * pick(0.99), 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def main() -> None:
    parser = _parser()
    parser.description = __doc__
    parser.add_argument("--pairs", type=int, default=3, help="alternated on / off runs (default 3)")
    parser.add_argument("--close-every", type=float, default=0.2, help="seconds between closes (default 0.2)")
    parser.set_defaults(connections="16", seconds=15.0, quiet_logs=True)
    args = parser.parse_args()
    tmp, home, env, _, bodies, _ = setup(args, "webhook-bench-")
    env = {**env, "FRAUD_WEBHOOK_ALLOW_PRIVATE": "true"}
    key = subprocess.run([*CLI, "keys", "create", "--role", "admin", "--name", "webhook bench"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    receiver = Receiver()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(args, env, port, tmp / "server.log")
    connections = int(str(args.connections).split(",")[0])
    url, script = f"{base}/v1/returns/assess", ROOT / "bench" / "assess.lua"
    wrk_env = {**env, "BODIES_FILE": str(bodies), "API_KEY": key}
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    closes = {"on": 0, "off": 0}
    try:
        wrk_env["RUN_TAG"] = "warm"
        wrk(url, 4, 5, wrk_env, script)  # warm, and open cases to close
        for n in range(args.pairs):
            for side in ("off", "on") if n % 2 == 0 else ("on", "off"):  # ABBA: drift falls on both sides
                hook = None
                if side == "on":
                    hook = _hook(base, key, "POST", "/v1/webhooks", {"url": receiver.url,
                                                                     "events": ["assessment.outcome", "case.closed"]})
                    receiver.secret = hook["secret"]
                wrk_env["RUN_TAG"] = f"lb-{side}{n}"
                _forget_earlier_runs(env)  # every run starts from the same features
                with Closer(base, key, args.close_every) as closer:
                    runs[side].append(measured(server, lambda: wrk(url, connections, args.seconds, wrk_env, script)))
                closes[side] += closer.closed
                if hook is not None:
                    deadline = time.monotonic() + 30  # what was emitted during the run arrives before it is removed
                    while time.monotonic() < deadline and _hook(base, key, "GET", "/v1/webhooks")["webhooks"][0][
                            "pending"]:
                        time.sleep(0.2)
                    urllib.request.urlopen(urllib.request.Request(
                        f"{base}/v1/webhooks/{hook['id']}", method="DELETE",
                        headers={"Authorization": f"Bearer {key}"}), timeout=30).close()
                print(f"pair {n} webhooks {side:>3}: assess {runs[side][-1]['rps']:7.1f} req/s, p99 "
                      f"{runs[side][-1]['p99_ms']:6.1f} ms; cases closed {closer.closed}", flush=True)
    finally:
        stop_server(server)
    ratios = [round(on["rps"] / off["rps"], 3) for on, off in zip(runs["on"], runs["off"], strict=True)]
    results = {
        "connections": connections, "seconds": args.seconds, "workers": args.workers, "threads": args.threads,
        "close_every_s": args.close_every, "cases_closed": closes,
        "delivery_latency": _percentiles(list(receiver.latencies.values())), "bad_signatures": receiver.bad,
        "assess_rps": {side: [r["rps"] for r in found] for side, found in runs.items()},
        "assess_p99_ms": {side: [r["p99_ms"] for r in found] for side, found in runs.items()},
        "server_cpu_ms_per_request": {side: [r["server_cpu_ms_per_request"] for r in found]
                                      for side, found in runs.items()},
        "server_busy": {side: [r["server_busy"] for r in found] for side, found in runs.items()},
        "rps_ratio_on_off_per_pair": ratios, "rps_ratio_on_off_median": statistics.median(ratios),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
