"""Where an assessment's CPU goes: the app in this process, the load bench's world and bodies, one request at a time.

Posts the returns the load bench replays (`bench/load_bench.py --home H` must have built H) through Flask's test
client, without gunicorn or a socket, and prints the process's CPU time per assessment (every thread), its split
by thread (the request's, the evidence writer's, the live-fact writer's, ...), the functions that took the most of
the request thread's under cProfile, and the CPU of one /healthz through the app alone (Flask and the middleware,
without gunicorn: the load bench's /healthz figure less this is gunicorn's share of every request). Each run
starts from an empty evidence database and forgets the live facts of earlier runs, so the same returns are
assessed afresh.

    .venv/bin/python bench/assess_profile.py --home /work/bench-load [--requests 3000] [--top 35]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/fraud_profile]   # dropped and created
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a FRAUD_HOME built by bench/load_bench.py --home")
    parser.add_argument("--requests", type=int, default=3000, help="assessments to post (default 3,000)")
    parser.add_argument("--top", type=int, default=35, help="functions to list (default 35)")
    parser.add_argument("--no-profile", action="store_true", help="CPU per assessment only")
    parser.add_argument("--database", help="a PostgreSQL FRAUD_DATABASE_URL for the evidence (the database is dropped "
                                           "and created); default a new SQLite file")
    args = parser.parse_args()
    home = Path(args.home)
    built = json.loads((home / "load-bench.json").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="assess-profile-"))
    os.environ.update(FRAUD_HOME=str(home), FRAUD_LOG_LEVEL="WARNING",
                      FRAUD_DATABASE_URL=args.database or f"sqlite:///{scratch / 'fraud.db'}")

    from bench.load_bench import _forget_earlier_runs, _reset_postgres, write_bodies

    if args.database:
        _reset_postgres(args.database)

    _forget_earlier_runs(dict(os.environ))
    bodies_file = scratch / "bodies.jsonl"
    write_bodies(home / "dataset", bodies_file, built["cutoff"], args.requests)
    bodies = [json.loads(line) for line in bodies_file.read_text().splitlines()]

    from api.app import create_app
    from fraud_service.store.db import make_engine
    from fraud_service.store.migrate import upgrade

    schema = make_engine(os.environ["FRAUD_DATABASE_URL"])
    upgrade(schema)  # before the app starts: its workers check the schema
    schema.dispose()
    app = create_app()
    service = app.extensions["fraud"]
    from fraud_service.access.keys import create_key

    headers = {"Authorization": f"Bearer {create_key(service.uow(), 'scoring', 'profile', 'bench')}"}
    client = app.test_client()
    for n, body in enumerate(bodies[:50]):  # warm: first calls load lazily
        client.post("/v1/returns/assess", json={**body, "return_id": f"lbwarm-{n}"}, headers=headers)
    timed = bodies[50:]
    statuses: dict[int, int] = {}
    profile = cProfile.Profile() if not args.no_profile else None
    walls = []
    threads0 = thread_cpu()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profile:
        profile.enable()
    for n, body in enumerate(timed):
        t = time.perf_counter()
        answer = client.post("/v1/returns/assess", json={**body, "return_id": f"lbprof-{n}"}, headers=headers)
        walls.append(time.perf_counter() - t)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    if profile:
        profile.disable()
    assessor = service.assessor
    if assessor.freshness is not None:
        assessor.freshness.drain()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    threads = thread_cpu()
    print(f"{len(timed):,} assessments {statuses} in {wall:.1f} s: CPU {cpu / len(timed) * 1000:.3f} ms each (all "
          f"threads{', under cProfile' if profile else ''}), wall median {statistics.median(walls) * 1000:.3f} ms")
    split = {name: threads.get(name, 0.0) - threads0.get(name, 0.0) for name in threads}
    print("  by thread: " + ", ".join(f"{name} {seconds / len(timed) * 1000:.3f} ms" for name, seconds in
                                      sorted(split.items(), key=lambda kv: -kv[1]) if seconds > 0))
    healthz = app_healthz_cpu(app)
    print(f"/healthz through the app alone (Flask and the middleware, no gunicorn, no socket): CPU {healthz:.3f} ms "
          "each; the load bench's /healthz figure less this is gunicorn's own share of every request")
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(args.top)
        print(out.getvalue())
    service.close()
    shutil.rmtree(scratch, ignore_errors=True)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, summed by thread name without its number (the request
    thread is this one: `request`), from /proc (the kernel does not know Python's thread names)."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name.split(" ")[0].rstrip("0123456789-_") for t in threading.enumerate()}
    names[threading.get_native_id()] = "request"
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def app_healthz_cpu(app: object, calls: int = 5000) -> float:
    """CPU ms of one /healthz through the WSGI app itself (no server, no socket), after a warm-up: this thread's
    CPU time only (the writers are idle by then, but not counted either way)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/healthz", method="GET").get_environ()

    def start_response(*_: object) -> None:
        return None

    def call() -> None:
        for _ in app.wsgi_app(dict(environ), start_response):  # type: ignore[attr-defined]
            pass

    for _ in range(500):
        call()
    cpu0 = time.thread_time()
    for _ in range(calls):
        call()
    return (time.thread_time() - cpu0) / calls * 1000


if __name__ == "__main__":
    main()
