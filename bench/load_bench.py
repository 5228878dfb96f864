"""Load benchmark of the scoring API: gunicorn on loopback, wrk in a separate process.

The returns are replayed as they happened: the generated world's online store holds what was
known at a cutoff (`--replay-days` before its last return), the production model was trained on
labels known 45 days before the end, and wrk posts the returns requested after the cutoff, in
time order, each once per level under a new return_id: features from the online store plus the
live facts of the returns replayed before it, the model, the policy and rules, TreeSHAP for every
decision that is not a plain approve, the case for every review or deny, and the evidence write
committed before the answer. In the same run, the same server's /healthz (a constant JSON answer
through the same middleware) is measured at the same levels first, while the server is idle: the
framework's ceiling. Each level starts from the same features (the live facts of the level before
are forgotten). Each measurement also reports the server's CPU time (gunicorn master and workers,
from /proc) per request and the share of the machine's cores it kept busy: when that share is near
1, CPU per request is what limits throughput. With PostgreSQL on this machine, the CPU its processes
used per request is reported beside it (they share the same cores). Afterwards every 201 answer's
assessment must be in the database and `evidence verify` must pass.

    .venv/bin/python bench/load_bench.py                       # SQLite evidence, a new world in a temp dir
    .venv/bin/python bench/load_bench.py --database postgresql+psycopg://postgres@127.0.0.1:5432/fraud_bench
    .venv/bin/python bench/load_bench.py --home /work/bench-load   # build once in an empty dir, then reuse
    .venv/bin/python bench/load_bench.py --database postgresql+psycopg://postgres@127.0.0.1:5432/fraud_bench \
        --pg-latency 3    # every answer from PostgreSQL 3 ms late (bench/latency_proxy.py), as across a network
    .venv/bin/python bench/load_bench.py ... --instances 2   # two serve instances on one home, wrk split between

Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "api.cli"]


def _env(args: argparse.Namespace, home: Path) -> dict[str, str]:
    env = {**os.environ, "FRAUD_HOME": str(home), "FRAUD_LOG_LEVEL": "WARNING" if args.quiet_logs else "INFO"}
    if args.database:
        env["FRAUD_DATABASE_URL"] = args.database
    if args.live_log == "database":
        env["FRAUD_LIVE_LOG"] = args.database
    for name in ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(args: argparse.Namespace, home: Path, env: dict[str, str]) -> dict[str, Any]:
    """A world, its online store as of the replay cutoff and a production model in HOME (reused when there)."""
    from fraud_service.scoring.model import Scorer
    from models.registry import ModelRegistry

    dataset = home / "dataset"
    marker = home / "load-bench.json"
    world = {"customers": args.customers, "days": args.days, "orders_per_year": args.orders_per_year,
             "return_rate": args.return_rate, "replay_days": args.replay_days,
             "learning_rate": args.learning_rate, "leaves": args.leaves, "max_depth": args.max_depth,
             "min_trees": args.min_trees, "ensemble": args.ensemble}
    built = json.loads(marker.read_text()) if marker.exists() else None
    if built is not None and built["world"] != world:
        raise SystemExit(f"{home} holds a benchmark world built with {built['world']}; use another --home")
    if built is None and home.exists() and any(home.iterdir()):
        raise SystemExit(f"--home {home} is not empty and holds no benchmark world: name an empty directory")
    # an empty evidence database (the build's label sync reads it; the runs start from nothing)
    if args.database and args.database.startswith("postgresql"):
        _reset_postgres(args.database)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{home / 'fraud.db'}{suffix}").unlink(missing_ok=True)
    if built is None:
        built = _build(args, home, env, dataset, world)
        marker.write_text(json.dumps(built, indent=2))
    print(f"world in {home}: replaying the returns after {built['cutoff']} with model {built['version']}",
          flush=True)
    _run([*CLI, "db", "upgrade"], env)
    scorer = Scorer.from_registry(ModelRegistry(home / "models"), "production")
    return {"dataset": dataset, "cutoff": built["cutoff"], "version": scorer.version,
            "trees": scorer.booster.num_trees(), "leaves": scorer.booster.params.get("num_leaves"),
            "features": len(scorer.features), "policy": scorer.policy.get("version")}


def _build(args: argparse.Namespace, home: Path, env: dict[str, str], dataset: Path,
           world: dict[str, Any]) -> dict[str, Any]:
    """Generate and ingest the world, build its features, fill the online store as of the cutoff, train."""
    import dataclasses

    import pandas as pd

    from fraud_service.config import Settings
    from models.registry import ModelRegistry
    from training.trainset import current_snapshot, time_range
    from training.workflow import DEFAULT_CONFIG, train

    print(f"building the benchmark world in {home}: {args.customers:,} customers x {args.days} days ...", flush=True)
    _run([*CLI, "--quiet", "generate", "--out", str(dataset), "--customers", str(args.customers), "--days",
          str(args.days), "--orders-per-year", str(args.orders_per_year), "--return-rate", str(args.return_rate)], env)
    _run([*CLI, "--quiet", "ingest", str(dataset)], env)
    _run([*CLI, "--quiet", "features", "build"], env)
    settings = Settings.from_env(env)
    _, last = time_range(current_snapshot(settings.warehouse_dir))
    cutoff = (last - pd.Timedelta(days=args.replay_days)).floor("s")
    _run([*CLI, "--quiet", "features", "materialize", "--until", cutoff.isoformat(), "--full"], env)
    learning_rate = args.learning_rate
    for _ in range(3):  # a realistic model has hundreds of trees: a slower learning rate until it does
        print(f"training the production model ({args.leaves} leaves, depth <= {args.max_depth}, learning rate "
              f"{learning_rate:.4g}) ...", flush=True)
        config = dataclasses.replace(DEFAULT_CONFIG, learning_rate=learning_rate, num_leaves=args.leaves,
                                     max_depth=args.max_depth, max_rounds=5000, early_stopping_rounds=300,
                                     ensemble=args.ensemble)
        result = train(settings, (last - pd.Timedelta(days=45)).normalize(), config=config)
        assert result.record is not None
        trees = result.trained.best_iteration  # per member of an ensemble
        if trees >= args.min_trees:
            break
        learning_rate *= 0.8 * trees / args.min_trees
    else:
        raise SystemExit(f"no model of {args.min_trees} trees or more after three tries (last: {trees})")
    registry = ModelRegistry(settings.models_dir)
    if registry.aliases().get("production") != result.record.version:  # the first model is production already
        registry.promote(result.record.version)
    return {"world": world, "cutoff": cutoff.isoformat(), "version": result.record.version}


def _forget_earlier_runs(env: dict[str, str]) -> None:
    """Drop the live facts earlier runs (or levels) of this benchmark left (their returns would count again)."""
    from fraud_service.config import Settings
    from fraud_service.featurestore.live import LiveFacts
    from fraud_service.featurestore.source import FeatureSource

    live = LiveFacts(FeatureSource(Settings.from_env(env)))
    ids = [row[0] for row in live.db.execute("SELECT DISTINCT return_id FROM live_facts WHERE return_id LIKE 'lb%'")]
    if ids:
        print(f"forgetting the live facts of {len(ids):,} returns from earlier runs", flush=True)
        live.prune(ids)
    live.db.close()


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def write_bodies(dataset: Path, out: Path, cutoff: str, count: int) -> int:
    """The request bodies of the returns requested after CUTOFF, in time order (at most COUNT), one JSON line
    each, the id left as __RID__; how many."""
    import pandas as pd

    from training.datasets.replay import Replay

    replay = Replay(dataset)
    later = replay.returns[replay.returns["requested_at"] > pd.Timestamp(cutoff)]
    ids = later.reset_index(drop=True).sort_values(["requested_at", "return_id"])["return_id"].head(count)
    with out.open("w") as f:
        for body in replay.bodies(ids):
            body["return_id"] = "__RID__"
            f.write(json.dumps(body, separators=(",", ":")) + "\n")
    return len(ids)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: argparse.Namespace, env: dict[str, str], port: int, log: Path,
                 analyst_port: int = 0) -> subprocess.Popen[bytes]:
    """`serve` on PORT (and, unless ANALYST_PORT is 0, the analyst UI's own worker on ANALYST_PORT), once ready."""
    cmd = [*CLI, "serve", "--port", str(port), "--workers", str(args.workers), "--threads", str(args.threads),
           "--analyst-port", str(analyst_port)]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not become ready:\n{log.read_text()[-3000:]}")


def delayed_database(args: argparse.Namespace, env: dict[str, str]
                     ) -> tuple[subprocess.Popen[bytes] | None, dict[str, str]]:
    """With --pg-latency, a latency proxy in front of the PostgreSQL database and the server's environment
    pointing at it (the bench's own setup and checks talk to the database directly)."""
    if not args.pg_latency:
        return None, env
    from sqlalchemy import make_url

    if not (args.database or "").startswith("postgresql"):
        raise SystemExit("--pg-latency needs a PostgreSQL --database")
    url = make_url(args.database)
    port = _free_port()
    proxy = subprocess.Popen([sys.executable, str(ROOT / "bench" / "latency_proxy.py"), "--port", str(port),
                              "--upstream", f"{url.host or '127.0.0.1'}:{url.port or 5432}",
                              "--delay-ms", str(args.pg_latency)], start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)  # waiting for the proxy to listen, not timing anything
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    print(f"PostgreSQL through a proxy adding {args.pg_latency:g} ms to every answer", flush=True)
    live = {"FRAUD_LIVE_LOG": proxied} if "FRAUD_LIVE_LOG" in env else {}  # the same distance away
    return proxy, {**env, "FRAUD_DATABASE_URL": proxied, **live}


def stop_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(server: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) used so far by the server's gunicorn master and its workers."""
    pids = [server.pid]
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        pids += [int(pid) for pid in f.read().split()]
    return sum(_ticks(Path(f"/proc/{pid}/stat").read_text()) for pid in pids) / _TICK


def postgres_cpu() -> float:
    """CPU seconds (user + system) used so far by this machine's PostgreSQL processes (0 when none run here)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone since the listing
            continue
        if text.partition(" (")[2].startswith("postgres"):
            total += _ticks(text)
    return total / _TICK


def _ticks(stat: str) -> int:
    """A process's user + system CPU time in clock ticks, from its /proc/PID/stat text (fields 14 and 15 of
    proc(5), counted after the command name, which may hold spaces and parentheses)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measured(server: subprocess.Popen[bytes] | list[subprocess.Popen[bytes]],
             run: Callable[[], dict[str, Any]], postgres: bool = False) -> dict[str, Any]:
    """RUN's wrk figures, plus the server's (or servers') CPU per answered request (ms) and share of the machine's
    cores over the run (the wrk process and the kernel's work outside the servers are not in it); with POSTGRES,
    also the CPU the local PostgreSQL server's processes used per request."""
    servers = server if isinstance(server, list) else [server]
    cpu, database, started = sum(map(server_cpu, servers)), postgres_cpu() if postgres else 0.0, time.monotonic()
    result = run()
    used, elapsed = sum(map(server_cpu, servers)) - cpu, time.monotonic() - started
    result["server_cpu_ms_per_request"] = round(1000 * used / max(result["requests"], 1), 3)
    result["server_busy"] = round(used / elapsed / (os.cpu_count() or 1), 3)
    if postgres:
        result["database_cpu_ms_per_request"] = round(1000 * (postgres_cpu() - database) / max(result["requests"], 1),
                                                      3)
    return result


def wrk(url: str, connections: int, seconds: float, env: dict[str, str], script: Path | None) -> dict[str, Any]:
    """Run wrk and parse throughput, latency percentiles and error counts from its report."""
    threads = min(connections, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
           "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    env = {**env, "WRK_THREADS": str(threads)}  # assess.lua interleaves the threads' bodies
    out = subprocess.run([*cmd, url], env=env, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"connections": connections, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": _ms(percentiles["50"]), "p90_ms": _ms(percentiles["90"]), "p99_ms": _ms(percentiles["99"]),
            "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def wrk_spread(urls: list[str], connections: int, seconds: float, env: dict[str, str],
               script: Path | None) -> dict[str, Any]:
    """`wrk` against every URL at once, the connections split evenly (each run's RUN_TAG made its own): requests,
    rates and errors summed, each latency percentile the worst of the runs (percentiles do not add)."""
    if len(urls) == 1:
        return wrk(urls[0], connections, seconds, env, script)
    from concurrent.futures import ThreadPoolExecutor

    shares = [connections // len(urls) + (i < connections % len(urls)) for i in range(len(urls))]
    def one(i: int) -> dict[str, Any]:
        return wrk(urls[i], shares[i], seconds, {**env, "RUN_TAG": f"{env.get('RUN_TAG')}-i{i}"}, script)

    with ThreadPoolExecutor(len(urls)) as pool:
        runs = list(pool.map(one, range(len(urls))))
    out = {"connections": connections, **{k: sum(r[k] for r in runs) for k in
                                           ("rps", "requests", "non_2xx", "socket_errors")}}
    out["rps"] = round(out["rps"], 2)
    out.update({k: max(r[k] for r in runs) for k in ("p50_ms", "p90_ms", "p99_ms")})
    return out


def evidence_summary(env: dict[str, str], tag: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from fraud_service.bootstrap import database
    from fraud_service.config import Settings
    from fraud_service.store import chain
    from fraud_service.store.schema import Assessment, EvidenceEvent

    engine, sessions = database(Settings.from_env(env))
    try:
        with sessions() as session:
            rows = session.execute(select(Assessment.decision, func.count()).where(
                Assessment.return_id.like(f"{tag}-%")).group_by(Assessment.decision)).all()
            events = session.execute(select(func.count()).select_from(EvidenceEvent).where(
                EvidenceEvent.kind == "assessment")).scalar_one()
            verified = chain.verify(session)
    finally:
        engine.dispose()
    return {"decisions": dict(rows), "assessments": sum(n for _, n in rows), "assessment_events": events,
            "chain_ok": verified.ok, "chain_events": verified.events, "chain_problem": verified.problem}


def _parser() -> argparse.ArgumentParser:
    from training.workflow import DEFAULT_CONFIG

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="FRAUD_HOME to build (or reuse) the world in (default: a temp dir)")
    parser.add_argument("--instances", type=int, default=1,
                        help="serve instances on one home, each on its own port with --workers workers; wrk's "
                             "connections are split evenly between them and the figures summed (default 1)")
    parser.add_argument("--pg-latency", type=float, default=0.0, metavar="MS",
                        help="with a PostgreSQL --database: the server reaches it through bench/latency_proxy.py, "
                             "which delays every answer by MS milliseconds (a network round trip); default 0")
    parser.add_argument("--customers", type=int, default=20000, help="of the generated world (default 20,000)")
    parser.add_argument("--days", type=int, default=180, help="of the generated world (default 180)")
    parser.add_argument("--orders-per-year", type=float, default=22.0, help="per customer (default 22)")
    parser.add_argument("--return-rate", type=float, default=0.4, help="returns per order (default 0.4)")
    parser.add_argument("--replay-days", type=int, default=21,
                        help="replay the returns of the world's last N days (default 21); the online store holds "
                             "what was known before them")
    parser.add_argument("--database", help="FRAUD_DATABASE_URL (default SQLite in the home; a PostgreSQL "
                                           "database named here is dropped and created)")
    parser.add_argument("--live-log", choices=["home", "database"], default="home",
                        help="where the live-fact log is: the home's SQLite file (default), or, with a PostgreSQL "
                             "--database, in that database (FRAUD_LIVE_LOG, as instances on several hosts run)")
    parser.add_argument("--connections", default="1,4,16,32", help="concurrency levels (default 1,4,16,32)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per measurement (default 15)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="per worker (default 8, as `serve`)")
    parser.add_argument("--bodies", type=int, default=100000,
                        help="at most this many returns to replay (default 100,000); a level that needs more starts "
                             "over from the first, and the summary says so")
    parser.add_argument("--learning-rate", type=float, default=0.01,
                        help="of the production model (default 0.01: hundreds of trees)")
    parser.add_argument("--leaves", type=int, default=63, help="of the production model (default 63)")
    parser.add_argument("--max-depth", type=int, default=6,
                        help="of the production model's trees (default 6; -1: no limit). TreeSHAP's cost per row "
                             "grows with the square of the depth: on this benchmark's world a 406-tree model of "
                             "unlimited depth (median 14) explained a row in 9.8 ms, a 432-tree model of depth 6 in "
                             "2.2 ms, with the same average precision")
    parser.add_argument("--min-trees", type=int, default=300,
                        help="the production model has at least this many trees in each member (default 300: the "
                             "learning rate is lowered until it does)")
    parser.add_argument("--ensemble", type=int, default=DEFAULT_CONFIG.ensemble,
                        help=f"members of the production model (default {DEFAULT_CONFIG.ensemble}, as `train`)")
    parser.add_argument("--quiet-logs", action="store_true", help="log warnings only (default: a line per request)")
    return parser


class Setup(NamedTuple):
    tmp: Path
    home: Path
    env: dict[str, str]
    info: dict[str, Any]
    bodies: Path
    replayed: int


def setup(args: argparse.Namespace, prefix: str, wrk: bool = True) -> Setup:
    """What a bench of the server needs before its server starts: a temp dir, the home and its environment, the world
    (`prepare`) and the replayed returns' bodies (`write_bodies`), with how many there are; with WRK, that wrk is
    installed."""
    if wrk and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    home = Path(args.home) if args.home else tmp / "home"
    env = _env(args, home)
    info = prepare(args, home, env)
    bodies = tmp / "bodies.jsonl"
    replayed = write_bodies(info["dataset"], bodies, info["cutoff"], args.bodies)
    print(f"{replayed:,} returns to replay, in time order", flush=True)
    return Setup(tmp, home, env, info, bodies, replayed)


def main() -> None:
    args = _parser().parse_args()
    if args.live_log == "database" and not (args.database or "").startswith("postgresql"):
        raise SystemExit("--live-log database needs a PostgreSQL --database")
    tmp, home, env, info, bodies, replayed = setup(args, "load-bench-")
    key = _run([*CLI, "keys", "create", "--role", "scoring", "--name", "load bench"], env).strip()
    proxy, server_env = delayed_database(args, env)
    ports: list[int] = []
    while len(ports) < args.instances:
        port = _free_port()
        ports += [] if port in ports else [port]
    servers: list[subprocess.Popen[bytes]] = []
    tag = f"lb{int(time.time())}"
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    wrk_env = {**os.environ, "BODIES_FILE": str(bodies), "API_KEY": key, "RUN_TAG": tag}
    levels = [int(c) for c in args.connections.split(",")]
    results: list[dict[str, Any]] = []
    from sqlalchemy import make_url

    local_postgres = (args.database or "").startswith("postgresql") and make_url(args.database).host in (
        None, "127.0.0.1", "localhost")  # None: a Unix socket
    try:
        for i, port in enumerate(ports):  # instances share the home; each keeps its own metrics directory
            servers.append(start_server(args, server_env, port, tmp / f"server-{i}.log"))
        for i, base in enumerate(bases):  # warm connections and caches
            wrk(f"{base}/healthz", 4, 3, wrk_env, None)
            wrk(base, 4, 3, {**wrk_env, "RUN_TAG": f"{tag}w{i}"}, ROOT / "bench" / "assess.lua")
        # the ceiling first, on an idle server: after an assess run the live-fact writers are still busy
        ceilings = {c: measured(servers, partial(wrk_spread, [f"{b}/healthz" for b in bases], c, args.seconds,
                                                 wrk_env, None))
                    for c in levels}
        for c in levels:
            ceiling = ceilings[c]
            _forget_earlier_runs(env)  # every level starts from the same features
            assess = measured(servers, partial(wrk_spread, bases, c, args.seconds,
                                               {**wrk_env, "RUN_TAG": f"{tag}-c{c}"}, ROOT / "bench" / "assess.lua"),
                              postgres=local_postgres)
            results.append({"connections": c, "assess": assess, "healthz": ceiling})
            print(f"c={c:>3}  assess {assess['rps']:8.1f} req/s  p50 {assess['p50_ms']:6.2f} ms  "
                  f"p99 {assess['p99_ms']:6.2f} ms  non-2xx {assess['non_2xx']}  |  healthz {ceiling['rps']:8.1f} "
                  f"req/s  p50 {ceiling['p50_ms']:5.2f} ms  p99 {ceiling['p99_ms']:5.2f} ms  |  "
                  f"ratio {assess['rps'] / ceiling['rps']:.2f}", flush=True)
            database = (f" + PostgreSQL {assess['database_cpu_ms_per_request']:.2f} ms"
                        if "database_cpu_ms_per_request" in assess else "")
            print(f"       server CPU per request: assess {assess['server_cpu_ms_per_request']:.2f} ms{database} "
                  f"(cores {assess['server_busy']:.0%} busy)  |  healthz {ceiling['server_cpu_ms_per_request']:.2f} ms "
                  f"({ceiling['server_busy']:.0%})", flush=True)
    finally:
        for running in servers:
            stop_server(running)
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
    evidence = evidence_summary(env, tag)
    answered = sum(r["assess"]["requests"] - r["assess"]["non_2xx"] for r in results)
    summary = {"model": {k: v for k, v in info.items() if k != "dataset"}, "workers": args.workers,
               "threads": args.threads, "instances": args.instances, "database": args.database or "sqlite (WAL)",
               "pg_latency_ms": args.pg_latency, "live_log": args.live_log,
               "seconds": args.seconds,
               "replayed_returns": replayed, "levels": results, "answered_201": answered, "evidence": evidence}
    cycled = [r["connections"] for r in results if r["assess"]["requests"] > replayed]
    if cycled:
        print(f"levels {cycled} needed more requests than the {replayed:,} returns and replayed some twice "
              "(a longer --replay-days or a larger world avoids it)")
    decided = evidence["decisions"]
    explained = sum(n for d, n in decided.items() if d != "approve")
    print(f"model {info['version']} (policy {info['policy']}): {info['trees']} trees, {info['features']} features; "
          f"workers {args.workers} x {args.threads} threads; evidence in {summary['database']}")
    print(f"decisions: {decided}; explained with SHAP: {explained:,} of {evidence['assessments']:,} "
          f"({explained / max(evidence['assessments'], 1):.1%})")
    print(f"201 answers {answered:,}; assessments stored {evidence['assessments']:,} (>= answers: requests cut off "
          f"when wrk stops are committed but not counted by wrk); evidence chain "
          f"{'intact' if evidence['chain_ok'] else 'BROKEN: ' + str(evidence['chain_problem'])} "
          f"({evidence['chain_events']:,} events)")
    print(json.dumps(summary, default=str))
    if not evidence["chain_ok"] or evidence["assessments"] < answered:
        raise SystemExit("evidence check failed")


if __name__ == "__main__":
    main()
