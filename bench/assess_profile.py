"""Where an assessment's CPU goes: the app in this process, the load bench's world and bodies, one request at a time.

Posts the returns the load bench replays (`bench/load_bench.py --home H` must have built H) through Flask's test
client, without gunicorn or a socket, and prints the process's CPU time per assessment (every thread: the
request's, the evidence writer's, the live-fact writer's) and the functions that took the most of it under
cProfile (request thread only). Each run starts from an empty evidence database and forgets the live facts of
earlier runs, so the same returns are assessed afresh.

    .venv/bin/python bench/assess_profile.py --home /work/bench-load [--requests 3000] [--top 35]
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
    args = parser.parse_args()
    home = Path(args.home)
    built = json.loads((home / "load-bench.json").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="assess-profile-"))
    os.environ.update(FRAUD_HOME=str(home), FRAUD_LOG_LEVEL="WARNING",
                      FRAUD_DATABASE_URL=f"sqlite:///{scratch / 'fraud.db'}")

    from bench.load_bench import _forget_earlier_runs, write_bodies

    _forget_earlier_runs(home)
    bodies_file = scratch / "bodies.jsonl"
    write_bodies(home / "dataset", bodies_file, built["cutoff"], args.requests)
    bodies = [json.loads(line) for line in bodies_file.read_text().splitlines()]

    from api.app import create_app
    from fraud_service.store.migrate import upgrade

    app = create_app()
    service = app.extensions["fraud"]
    upgrade(service.engine)
    from fraud_service.access.keys import create_key

    headers = {"Authorization": f"Bearer {create_key(service.uow(), 'scoring', 'profile', 'bench')}"}
    client = app.test_client()
    for n, body in enumerate(bodies[:50]):  # warm: first calls load lazily
        client.post("/v1/returns/assess", json={**body, "return_id": f"lbwarm-{n}"}, headers=headers)
    timed = bodies[50:]
    statuses: dict[int, int] = {}
    profile = cProfile.Profile() if not args.no_profile else None
    walls = []
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
    print(f"{len(timed):,} assessments {statuses} in {wall:.1f} s: CPU {cpu / len(timed) * 1000:.3f} ms each (all "
          f"threads{', under cProfile' if profile else ''}), wall median {statistics.median(walls) * 1000:.3f} ms")
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(args.top)
        print(out.getvalue())
    service.close()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
