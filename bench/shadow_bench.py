"""What shadow scoring costs assessments: the load benchmark's traffic with a shadow model on and off.

The server and the replayed returns are the load benchmark's (`bench/load_bench.py`: gunicorn on loopback, wrk
posting the world's later returns). The shadow is a second registered copy of the production model (the same
trees, so it costs what a real candidate of that size costs). Runs alternate between the shadow on
(`fraud-service models shadow V`) and off (`--off`), in the order off, on, on, off, off, on, ... so that drift
falls on both sides; after each switch the bench waits for the workers to follow the alias (they check every
5 seconds), and every run starts from the same features.

Reported: assess throughput and p99 with the shadow on and off, per pair and as the median of the on/off
ratios, and how many shadow scores were written during the on runs.

    .venv/bin/python bench/shadow_bench.py --home /tmp/bench-shadow --customers 8000 --days 120
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import time
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
from models.registry import ModelRegistry  # noqa: E402

FOLLOW_S = 7.0
"""Longer than a worker's alias check interval (5 s)."""


def _shadow_copy(home: Path) -> str:
    """A second version holding the production model's trees and policy: the shadow the bench turns on."""
    registry = ModelRegistry(home / "models")
    for version in registry.versions():
        if registry.manifest(version).get("note") == "shadow bench copy":
            return version
    record = registry.load("production")
    return registry.register(record.model_text(), {**record.manifest, "note": "shadow bench copy"},
                             record.policy).version


def _shadow_rows(home: Path) -> int:
    db = home / "fraud.db"
    if not db.exists():
        return -1
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM shadow_scores").fetchone()[0])


def main() -> None:
    parser = _parser()
    parser.description = __doc__
    parser.add_argument("--pairs", type=int, default=3, help="alternated on / off runs (default 3)")
    parser.set_defaults(connections="16", seconds=15.0, quiet_logs=True)
    args = parser.parse_args()
    tmp, home, env, _, bodies, _ = setup(args, "shadow-bench-")
    version = _shadow_copy(home)
    key = subprocess.run([*CLI, "keys", "create", "--role", "scoring", "--name", "shadow bench"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    port = _free_port()
    server = start_server(args, env, port, tmp / "server.log")
    connections = int(str(args.connections).split(",")[0])
    url, script = f"http://127.0.0.1:{port}/v1/returns/assess", ROOT / "bench" / "assess.lua"
    wrk_env = {**env, "BODIES_FILE": str(bodies), "API_KEY": key}
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    written = []
    shadow_on = False
    try:
        wrk_env["RUN_TAG"] = "warm"
        wrk(url, 4, 5, wrk_env, script)
        for n in range(args.pairs):
            for side in ("off", "on") if n % 2 == 0 else ("on", "off"):  # ABBA: drift falls on both sides
                if (side == "on") != shadow_on:
                    subprocess.run([*CLI, "models", "shadow", *([version] if side == "on" else ["--off"])], env=env,
                                   cwd=ROOT, capture_output=True, text=True, check=True)
                    shadow_on = side == "on"
                    time.sleep(FOLLOW_S)
                before = _shadow_rows(home)
                wrk_env["RUN_TAG"] = f"sb-{side}{n}"
                _forget_earlier_runs(env)
                runs[side].append(measured(server, lambda: wrk(url, connections, args.seconds, wrk_env, script)))
                if side == "on":
                    time.sleep(1.0)  # the last batch lands
                    written.append(_shadow_rows(home) - before)
                print(f"pair {n} shadow {side:>3}: assess {runs[side][-1]['rps']:7.1f} req/s, p99 "
                      f"{runs[side][-1]['p99_ms']:6.1f} ms", flush=True)
    finally:
        if shadow_on:
            subprocess.run([*CLI, "models", "shadow", "--off"], env=env, cwd=ROOT, capture_output=True, check=False)
        stop_server(server)
    rps = [round(on["rps"] / off["rps"], 3) for on, off in zip(runs["on"], runs["off"], strict=True)]
    p99 = [round(on["p99_ms"] / off["p99_ms"], 3) for on, off in zip(runs["on"], runs["off"], strict=True)]
    print(json.dumps({
        "connections": connections, "seconds": args.seconds, "workers": args.workers, "threads": args.threads,
        "shadow": version, "assess_rps": {s: [r["rps"] for r in found] for s, found in runs.items()},
        "assess_p99_ms": {s: [r["p99_ms"] for r in found] for s, found in runs.items()},
        "server_cpu_ms_per_request": {s: [r["server_cpu_ms_per_request"] for r in found] for s, found in runs.items()},
        "shadow_scores_written_per_on_run": written,
        "rps_ratio_on_off_per_pair": rps, "rps_ratio_on_off_median": statistics.median(rps),
        "p99_ratio_on_off_per_pair": p99, "p99_ratio_on_off_median": statistics.median(p99),
    }, indent=2))


if __name__ == "__main__":
    main()
