"""Reload benchmark: how `serve` answers through `kill -HUP` (a reload) under load.

The world is the load benchmark's (`bench/load_bench.py`: the same options, the same `--home`, built once and
reused). `serve` starts with its analyst port; CLIENTS threads post assessments on kept-alive connections (each a
return of the replayed window under a new return_id, as `bench/assess.lua` does), and one thread asks the analyst
port's `/readyz` every 50 ms on a new connection each time. Once the first answers are in, the bench sends
RELOADS reloads, each when the one before has ended (its old workers gone) and INTERVAL seconds have passed, and
samples the server's processes every 100 ms. It prints, per port: the answers, the errors (anything but 201 on the
main port, 200 on the analyst port, and failed connections), the longest gap between two answers and the slowest
answer; per reload, how long until its old workers had gone; and the most processes and memory (summed RSS) the
server held at once. Afterwards every 201 must be stored and the evidence chain must verify.

    .venv/bin/python bench/reload_bench.py --home /work/bench-load             # the load bench's world
    .venv/bin/python bench/reload_bench.py --home /work/bench-load --reloads 8 --interval 5
    PYTHONPATH=<other tree> .venv/bin/python <other tree>/bench/reload_bench.py --home ...   # a commit against another
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_bench import (  # noqa: E402 - bench/ is not a package
    CLI,
    _free_port,
    _parser,
    _run,
    evidence_summary,
    setup,
    start_server,
    stop_server,
)


class Answers:
    """When each answer on one port came (monotonic seconds), how long each took, and what went wrong."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[tuple[float, float]] = []  # (when answered, how long it took)
        self.errors: list[tuple[float, str]] = []  # (when, what)

    def answered(self, started: float, error: str | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            if error is None:
                self.times.append((now, now - started))
            else:
                self.errors.append((now, error))

    def summary(self, since: float) -> dict[str, Any]:
        """The figures from SINCE on (the warm-up before it left out)."""
        times = sorted(t for t in self.times if t[0] >= since)
        gaps = [b[0] - a[0] for a, b in zip(times, times[1:], strict=False)]
        errors: dict[str, int] = {}
        for _, error in (e for e in self.errors if e[0] >= since):
            errors[error] = errors.get(error, 0) + 1
        return {"answers": len(times), "errors": errors, "longest_gap_s": round(max(gaps, default=0.0), 3),
                "slowest_answer_s": round(max((t[1] for t in times), default=0.0), 3)}


def _assess(port: int, key: str, bodies: list[str], tag: str, answers: Answers, stop: threading.Event) -> None:
    """One client posting new returns on a kept-alive connection (a new one after an error or a close)."""
    conn: http.client.HTTPConnection | None = None
    sent = 0
    while not stop.is_set():
        body = bodies[sent % len(bodies)].replace("__RID__", f"{tag}-{sent}")
        sent += 1
        started = time.monotonic()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/v1/returns/assess", body, {"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {key}"})
            reply = conn.getresponse()
            reply.read()
            answers.answered(started, None if reply.status == 201 else str(reply.status))
            if reply.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except OSError as exc:
            answers.answered(started, type(exc).__name__)
            if conn is not None:
                conn.close()
            conn = None


def _ready(port: int, answers: Answers, stop: threading.Event) -> None:
    """The analyst port's /readyz every 50 ms, a new connection each time (a person opening a page)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=60) as reply:
                reply.read()
                answers.answered(started, None if reply.status == 200 else str(reply.status))
        except urllib.error.HTTPError as exc:
            answers.answered(started, str(exc.code))
        except OSError as exc:
            answers.answered(started, type(exc).__name__)
        stop.wait(0.05)  # the pace of the probe, not a wait for something


def _workers(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # gone since
            pass
    return total / 2**20


def main() -> None:
    parser = _parser()
    parser.description = __doc__
    parser.add_argument("--reloads", type=int, default=3, help="reloads to send (default 3)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds at least between reloads, and of load before the first and after the last "
                             "(default 10)")
    parser.add_argument("--clients", type=int, default=6, help="threads posting assessments (default 6)")
    args = parser.parse_args()
    tmp, home, env, info, bodies_file, _ = setup(args, "reload-bench-", wrk=False)
    key = _run([*CLI, "keys", "create", "--role", "scoring", "--name", "reload bench"], env).strip()
    bodies = bodies_file.read_text().splitlines()
    port, analyst_port = _free_port(), _free_port()
    while analyst_port == port:
        analyst_port = _free_port()
    tag = f"rb{int(time.time())}"
    server = start_server(args, env, port, tmp / "server.log", analyst_port)
    scoring, analyst, stop = Answers(), Answers(), threading.Event()
    threads = [threading.Thread(target=_assess, args=(port, key, bodies[i::args.clients], f"{tag}-{i}", scoring,
                                                      stop)) for i in range(args.clients)]
    threads.append(threading.Thread(target=_ready, args=(analyst_port, analyst, stop)))
    most = {"processes": 0, "rss_mb": 0.0}
    handovers: list[float] = []
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while not scoring.times or not analyst.times:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no answers within 120 s: {scoring.summary(0)}, {analyst.summary(0)}\n"
                                 f"{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.1)  # waiting for the first answers, not timing anything
        began = time.monotonic()
        stop.wait(args.interval)
        for n in range(args.reloads):
            old = _workers(server.pid)
            sent = time.monotonic()
            os.kill(server.pid, signal.SIGHUP)
            while True:
                pids = _workers(server.pid) | {server.pid}
                most["processes"] = max(most["processes"], len(pids) - 1)
                most["rss_mb"] = max(most["rss_mb"], _rss_mb(pids))
                if server.poll() is not None or time.monotonic() - sent > 900:
                    raise SystemExit(f"the server exited, or its old workers lived on for 900 s, in reload {n + 1}:\n"
                                     f"{(tmp / 'server.log').read_text()[-3000:]}")
                gone = not old & pids
                if gone and len(handovers) == n:
                    handovers.append(round(time.monotonic() - sent, 1))
                if gone and time.monotonic() - sent >= args.interval:
                    break
                time.sleep(0.1)  # a sampling period
            print(f"reload {n + 1}: its old workers had gone {handovers[n]:.1f} s after the signal", flush=True)
        stop.wait(args.interval)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=70)
        stop_server(server)
    figures = {"main port (assessments)": scoring.summary(began), "analyst port (/readyz)": analyst.summary(began)}
    for name, summary in figures.items():
        print(f"{name}: {summary['answers']:,} answers, errors {summary['errors'] or 'none'}, longest gap between "
              f"answers {summary['longest_gap_s']:.3f} s, slowest answer {summary['slowest_answer_s']:.3f} s")
    print(f"at most {most['processes']} workers and {most['rss_mb']:,.0f} MB (the server's summed RSS) at once")
    evidence = evidence_summary(env, tag)
    stored, answered = evidence["assessments"], len(scoring.times)  # every 201, the warm-up's too
    print(f"201 answers {answered:,}; assessments stored {stored:,}; evidence chain "
          f"{'intact' if evidence['chain_ok'] else 'BROKEN: ' + str(evidence['chain_problem'])}")
    print(json.dumps({"model": {k: v for k, v in info.items() if k != "dataset"}, "reloads": args.reloads,
                      "interval_s": args.interval, "clients": args.clients, "handover_s": handovers,
                      "ports": figures, "most": most, "evidence": evidence}, default=str))
    if not evidence["chain_ok"] or stored < answered:
        raise SystemExit("evidence check failed")


if __name__ == "__main__":
    main()
