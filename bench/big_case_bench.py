"""Reads never block scoring: assess latency while analysts open the largest case, against idle.

The load benchmark's world and server (bench/load_bench.py) with one case grown to `--case-size`
assessments (one customer flagged that often: the size scoring traffic once made through shared tokens).
It measures, in one run against one server:

1. the case page (`/ui/cases/ID`, signed in as an analyst) and the case API (`/v1/cases/ID`) alone:
   median and slowest of `--page-samples` loads;
2. assess (wrk at `--connections`, the replayed returns) alone: p50/p90/p99;
3. assess alone and while `--analysts` analysts each load the case page in a loop (`--think` seconds
   apart), alternated `--pairs` times: each run's p99 and rps, the ratio of p99 with analysts to the idle
   p99 of its pair (and their median), and the case page's median and slowest load under that load.

    .venv/bin/python bench/big_case_bench.py --home /work/bench-load   # reuse the load bench's world

Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_bench import (  # noqa: E402
    CLI,
    ROOT,
    _free_port,
    _parser,
    measured,
    setup,
    start_server,
    stop_server,
    wrk,
)


def grow_case(env: dict[str, str], dataset: Path, cutoff: str, size: int) -> str:
    """One real assessment of a replayed return, stored SIZE times as a review of one customer: the id of the
    case they all join."""
    from fraud_service import bootstrap
    from fraud_service.config import Settings
    from fraud_service.feedback import outcomes
    from fraud_service.scoring.evidence import request_hash
    from fraud_service.scoring.request import parse_request
    from training.datasets.replay import Replay

    settings = Settings.from_env(env)
    service = bootstrap.build(settings, freshness=False, watch=False)
    try:
        assessor = service.require_assessor()
        replay = Replay(dataset)
        import pandas as pd

        later = replay.returns[replay.returns["requested_at"] > pd.Timestamp(cutoff)]
        body = next(iter(replay.bodies(later["return_id"].head(1))))
        body["return_id"] = "big-case-seed"
        now = dt.datetime.now(dt.UTC)
        outcome = assessor.assess(parse_request(body, now), request_hash(body), "bench")
        seed = outcomes.read(service.uow(), assessment_id=outcome.response["assessment_id"],
                             messages=service.feedback.messages)
        started = time.monotonic()
        case_id = ""
        for n in range(size):
            assessment_id = f"asm_bigcase{n:08d}"
            at = dt.datetime.now(dt.UTC)
            response = {**seed["response"], "assessment_id": assessment_id, "return_id": f"big-case-{n}",
                        "decision": "review", "assessed_at": at.isoformat(),
                        "evidence": f"/v1/assessments/{assessment_id}"}
            record = {k: seed[k] for k in ("request_hash", "request", "features", "feature_times", "raw_score",
                                           "contributions")} | {"response": response}
            record["request"] = {**record["request"], "return_id": f"big-case-{n}", "customer_id": "C-big-case"}
            row = {"id": assessment_id, "return_id": f"big-case-{n}", "customer_id": "C-big-case",
                   "request_hash": seed["request_hash"], "created_at": at, "score": response["score"],
                   "decision": "review", "risk_level": response["risk_level"],
                   "model_version": response["model_version"], "policy_version": response["policy_version"],
                   "refund_amount": record["request"]["refund_amount"], "case_id": None, "reason": "history"}
            assessor.writer.store(row, record, "bench", at, {"customer": "C-big-case"})
            case_id = row["case_id"] or case_id
        print(f"grew case {case_id} to {size:,} assessments in {time.monotonic() - started:.1f} s", flush=True)
        return case_id
    finally:
        service.close()


def sign_in(base: str, env: dict[str, str]) -> urllib.request.OpenerDirector:
    """An analyst's browser session: a user made with the CLI, signed in through the login form."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    password = subprocess.run([*CLI, "users", "create", name], env=env, cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"{base}/ui/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    form = {"name": name, "password": password, **({"csrf_token": token.group(1)} if token else {})}
    answer = opener.open(f"{base}/ui/login", data=urllib.parse.urlencode(form).encode())
    if "/ui/login" in answer.geturl():
        raise SystemExit("the bench analyst could not sign in")
    return opener


def load_times(opener: urllib.request.OpenerDirector, url: str, samples: int,
               headers: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(samples):
        request = urllib.request.Request(url, headers=headers or {})
        started = time.monotonic()
        with opener.open(request, timeout=60) as answer:
            answer.read()
        times.append(1000 * (time.monotonic() - started))
    return times


class Analysts:
    """COUNT analysts, each signed in on their own, loading PAGE again and again (THINK seconds apart) while the
    block runs; the load times they saw."""

    def __init__(self, base: str, env: dict[str, str], page: str, count: int, think: float) -> None:
        self.sessions = [sign_in(base, env) for _ in range(count)]
        self.page, self.think = page, think
        self.times: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._browse, args=(s,), daemon=True) for s in self.sessions]

    def __enter__(self) -> Analysts:
        for thread in self._threads:
            thread.start()
        time.sleep(1)  # every analyst is loading pages before the measurement starts
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _browse(self, session: urllib.request.OpenerDirector) -> None:
        while not self._stop.is_set():
            took = load_times(session, self.page, 1)
            with self._lock:
                self.times.extend(took)
            self._stop.wait(self.think)


def summary(times: list[float]) -> dict[str, float]:
    return {"loads": len(times), "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> None:
    parser = _parser()
    parser.description = __doc__
    parser.add_argument("--case-size", type=int, default=2000, help="assessments in the big case (default 2,000)")
    parser.add_argument("--analysts", type=int, default=4, help="analysts loading the case page (default 4)")
    parser.add_argument("--page-samples", type=int, default=20, help="idle loads of each page (default 20)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds an analyst reads a page before loading it again (default 0: back to back)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated idle / with-analysts runs (default 3)")
    parser.add_argument("--shared-workers", action="store_true",
                        help="analysts use the main port's workers (serve --analyst-port 0), as before the analyst "
                             "port existed")
    parser.set_defaults(connections="8", seconds=15.0, quiet_logs=True)
    args = parser.parse_args()
    tmp, _, env, info, bodies, _ = setup(args, "big-case-bench-")
    case_id = grow_case(env, info["dataset"], info["cutoff"], args.case_size)
    key = subprocess.run([*CLI, "keys", "create", "--role", "admin", "--name", "big case bench"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    port, analyst_port = _free_port(), (0 if args.shared_workers else _free_port())
    base = f"http://127.0.0.1:{port}"
    ui_base = f"http://127.0.0.1:{analyst_port or port}"  # analysts use the analyst port, as `serve` tells them
    server = start_server(args, env, port, tmp / "server.log", analyst_port)
    results: dict[str, Any] = {"case_size": args.case_size, "analysts": args.analysts, "think_s": args.think,
                               "workers": args.workers, "threads": args.threads, "connections": args.connections,
                               "seconds": args.seconds, "analyst_port": bool(analyst_port)}
    try:
        analyst = sign_in(ui_base, env)
        page, api = f"{ui_base}/ui/cases/{case_id}", f"{ui_base}/v1/cases/{case_id}"
        load_times(analyst, page, 2)  # warm: the case's customer history is read once per worker
        results["page_idle"] = summary(load_times(analyst, page, args.page_samples))
        results["api_idle"] = summary(load_times(urllib.request.build_opener(), api, args.page_samples,
                                                 {"Authorization": f"Bearer {key}"}))
        wrk_env = {**env, "BODIES_FILE": str(bodies), "API_KEY": key}
        script = ROOT / "bench" / "assess.lua"
        url = f"{base}/v1/returns/assess"
        connections = int(str(args.connections).split(",")[0])
        under_load: list[float] = []
        runs: dict[str, list[dict[str, Any]]] = {"idle": [], "with_analysts": []}
        for n in range(args.pairs):  # alternated, so the machine's drift falls on both sides
            wrk_env["RUN_TAG"] = f"idle{n}"
            runs["idle"].append(measured(server, lambda: wrk(url, connections, args.seconds, wrk_env, script)))
            with Analysts(ui_base, env, page, args.analysts, args.think) as analysts:
                wrk_env["RUN_TAG"] = f"busy{n}"
                runs["with_analysts"].append(measured(server, lambda: wrk(url, connections, args.seconds, wrk_env,
                                                                          script)))
            under_load += analysts.times
        results["assess_p99_ms"] = {side: [r["p99_ms"] for r in found] for side, found in runs.items()}
        results["assess_rps"] = {side: [r["rps"] for r in found] for side, found in runs.items()}
        results["p99_ratio_per_pair"] = [round(b["p99_ms"] / a["p99_ms"], 2)
                                         for a, b in zip(runs["idle"], runs["with_analysts"], strict=True)]
        results["p99_ratio_median"] = statistics.median(results["p99_ratio_per_pair"])
        results["page_under_load"] = summary(under_load)
    finally:
        stop_server(server)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
