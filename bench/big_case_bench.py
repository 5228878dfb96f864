"""Reads never block scoring: assess latency while analysts open the largest case, against idle.

The load benchmark's world and server (bench/load_bench.py) with one case grown to `--case-size`
assessments (one customer flagged that often: the size scoring traffic once made through shared tokens).
It measures, in one run against one server:

1. the case page (`/ui/cases/ID`, signed in as an analyst) and the case API (`/v1/cases/ID`) alone:
   median and slowest of `--page-samples` loads;
2. assess (wrk at `--connections`, the replayed returns) alone: p50/p90/p99;
3. assess again while `--analysts` analysts each load the case page in a loop: p50/p90/p99 and the ratio
   of p99 to the idle p99, and the case page's median and slowest load under that load.

    .venv/bin/python bench/big_case_bench.py --home /work/bench-load   # reuse the load bench's world

Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_bench import (  # noqa: E402
    CLI,
    ROOT,
    _env,
    _free_port,
    _parser,
    measured,
    prepare,
    start_server,
    stop_server,
    write_bodies,
    wrk,
)


def grow_case(env: dict[str, str], dataset: Path, cutoff: str, size: int) -> str:
    """One real assessment of a replayed return, stored SIZE times as a review of one customer: the id of the
    case they all join."""
    from fraud_service import bootstrap
    from fraud_service.config import Settings
    from fraud_service.scoring.evidence import load_assessment, request_hash
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
        seed = load_assessment(service.uow(), assessment_id=outcome.response["assessment_id"]).to_dict()
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
    name = f"bench{int(time.time())}"
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


def summary(times: list[float]) -> dict[str, float]:
    return {"loads": len(times), "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> None:
    parser = _parser()
    parser.description = __doc__
    parser.add_argument("--case-size", type=int, default=2000, help="assessments in the big case (default 2,000)")
    parser.add_argument("--analysts", type=int, default=4, help="analysts loading the case page (default 4)")
    parser.add_argument("--page-samples", type=int, default=20, help="idle loads of each page (default 20)")
    parser.set_defaults(connections="8", seconds=20.0, quiet_logs=True)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="big-case-bench-"))
    home = Path(args.home) if args.home else tmp / "home"
    env = _env(args, home)
    info = prepare(args, home, env)
    bodies = tmp / "bodies.jsonl"
    write_bodies(info["dataset"], bodies, info["cutoff"], args.bodies)
    case_id = grow_case(env, info["dataset"], info["cutoff"], args.case_size)
    key = subprocess.run([*CLI, "keys", "create", "--role", "admin", "--name", "big case bench"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(args, env, port, tmp / "server.log")
    results: dict[str, Any] = {"case_size": args.case_size, "analysts": args.analysts, "workers": args.workers,
                               "threads": args.threads}
    try:
        analyst = sign_in(base, env)
        page, api = f"{base}/ui/cases/{case_id}", f"{base}/v1/cases/{case_id}"
        load_times(analyst, page, 2)  # warm: the case's customer history is read once per worker
        results["page_idle"] = summary(load_times(analyst, page, args.page_samples))
        results["api_idle"] = summary(load_times(urllib.request.build_opener(), api, args.page_samples,
                                                 {"Authorization": f"Bearer {key}"}))
        wrk_env = {**env, "BODIES_FILE": str(bodies), "API_KEY": key, "RUN_TAG": "idle"}
        script = ROOT / "bench" / "assess.lua"
        url = f"{base}/v1/returns/assess"
        connections = int(str(args.connections).split(",")[0])
        results["assess_idle"] = measured(server, lambda: wrk(url, connections, args.seconds, wrk_env, script))
        stop = threading.Event()
        under_load: list[float] = []
        lock = threading.Lock()

        def browse() -> None:
            own = sign_in(base, env)
            while not stop.is_set():
                took = load_times(own, page, 1)
                with lock:
                    under_load.extend(took)

        browsers = [threading.Thread(target=browse, daemon=True) for _ in range(args.analysts)]
        for thread in browsers:
            thread.start()
        time.sleep(2)  # the analysts are all loading pages before wrk starts
        wrk_env["RUN_TAG"] = "busy"
        results["assess_with_analysts"] = measured(server, lambda: wrk(url, connections, args.seconds, wrk_env,
                                                                       script))
        stop.set()
        for thread in browsers:
            thread.join(timeout=120)
        results["page_under_load"] = summary(under_load)
        results["p99_ratio"] = round(results["assess_with_analysts"]["p99_ms"] / results["assess_idle"]["p99_ms"], 2)
    finally:
        stop_server(server)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
