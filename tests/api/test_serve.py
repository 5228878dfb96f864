"""`fraud-service serve` for real: gunicorn workers sharing a client's connections, posted returns, a clean stop."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

import api
from api.gunicorn_worker import ANALYST_NICE
from fraud_service.bootstrap import database
from fraud_service.config import Settings
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, EvidenceEvent
from tests.api.conftest import body_from_dataset
from tests.conftest import TrainedWorld
from tests.serving import CLI, free_port, get, pid_alive, post, ready_workers, serve_env, stop_all, wait_ready

pytestmark = pytest.mark.slow


def test_serve_spreads_connections_over_its_workers_stores_every_answer_and_stops_cleanly(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    env = {**serve_env(serving_home, tmp_path), "FRAUD_CLIENT_TIMEOUT_S": "1"}
    cli = CLI
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([*cli, "keys", "create", "--role", "scoring", "--name", "serve test"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    port, analyst_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", "2", "--threads", "2",
                               "--analyst-port", str(analyst_port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status, ready = 0, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, ready = get(f"{base}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.25)
        assert status == 200, (ready, (tmp_path / "serve.log").read_text()[-2000:])
        while time.monotonic() < deadline and len(ready_workers(tmp_path / "serve.log")) < 3:
            time.sleep(0.25)  # waiting for the other workers to load, not timing anything
        assert len(ready_workers(tmp_path / "serve.log")) == 3  # two for the main port, one for analysts
        returns = pd.read_parquet(trained_world.dataset / "returns.parquet").sort_values("return_id")
        ids = [f"serve-{uuid.uuid4().hex[:10]}-{n}" for n in range(6)]
        answers = [post(f"{base}/v1/returns/assess",
                         body_from_dataset(trained_world.dataset, str(source), return_id=rid), key)
                   for source, rid in zip(returns["return_id"].iloc[:6], ids, strict=True)]
        assert [code for code, _ in answers] == [201] * 6
        first = body_from_dataset(trained_world.dataset, str(returns["return_id"].iloc[0]), return_id=ids[0])
        again = post(f"{base}/v1/returns/assess", first, key)
        assert again == (200, answers[0][1])  # the stored assessment, not a second one
        pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(12)]
        for conn in pool:  # a client's connection pool, opened at once (as wrk does) and kept alive
            conn.connect()
        for conn in pool:
            conn.request("GET", "/healthz")
        for conn in pool:
            assert conn.getresponse().read()
        held = _server_connections(server.pid, port)
        for conn in pool:
            conn.close()
        assert sum(held.values()) == 12 and len(held) == 2, held
        assert max(held.values()) - min(held.values()) <= 2, held  # each worker took its share
        analysts = [http.client.HTTPConnection("127.0.0.1", analyst_port, timeout=10) for _ in range(4)]
        for conn in analysts:
            conn.connect()
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
        on_analyst_port = _server_connections(server.pid, analyst_port)
        for conn in analysts:
            conn.close()
        [(analyst_worker, count)] = on_analyst_port.items()  # one worker holds them all, and only it
        assert count == 4 and analyst_worker not in held
        with open(f"/proc/{analyst_worker}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[16]) == ANALYST_NICE  # field 19 of proc(5): nice
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
        for conn in stalled:  # three times the scoring threads, each holding half a request, silent after it
            conn.sendall(b"POST /v1/returns/assess HTTP/1.1\r\nHost: x\r\n")
        try:  # each thread drops its silent client after FRAUD_CLIENT_TIMEOUT_S; they held every thread for good
            assert get(f"{base}/healthz", timeout=30)[0] == 200
        finally:
            for conn in stalled:
                conn.close()
        dropped = _trickle(port, 12, every=0.4, give_up=25.0)  # a byte within every 1 s read timeout
        try:  # three per scoring thread: they held every thread for as long as they kept trickling
            assert get(f"{base}/healthz", timeout=10)[0] == 200
        finally:
            seconds = dropped.result(timeout=40)
        assert len(seconds) == 12 and max(seconds) < 10, seconds  # each dropped when its request was not in by 1 s
        for raw, status in ((b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
                            (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
                            (b"GARBAGE\r\n\r\n", 400)):
            head, body = _raw_exchange(port, raw)  # refused by gunicorn itself, before the application
            assert head.startswith(f"HTTP/1.1 {status} ") and "Content-Type: application/json" in head, head
            reason = head.split("\r\n", 1)[0].split(" ", 2)[2]  # "URI Too Long" -> uri_too_long
            assert json.loads(body)["error"] == reason.lower().replace(" ", "_"), body
        head, body = _raw_exchange(port, b"POST /v1/returns/assess HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   + key.encode() + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        assert head.startswith("HTTP/1.1 400 "), head  # a chunk size that is none was a 500
        assert "chunked body is malformed" in json.loads(body)["message"], body
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        code = server.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    engine, sessions = database(Settings.from_env(env))
    try:
        with sessions() as session:
            stored = dict(session.execute(select(Assessment.return_id, Assessment.id)
                                          .where(Assessment.return_id.in_(ids))).all())
            payloads = session.execute(select(EvidenceEvent.payload)
                                       .where(EvidenceEvent.kind == "assessment")).scalars()
            responses = {json.loads(p)["response"]["return_id"]: json.loads(p)["response"] for p in payloads}
            verified = chain.verify(session)
    finally:
        engine.dispose()
    assert stored == {rid: answer["assessment_id"] for rid, (_, answer) in zip(ids, answers, strict=True)}
    assert all(responses[rid] == answer for rid, (_, answer) in zip(ids, answers, strict=True))
    assert verified.ok and verified.events >= 6


def _raw_exchange(port: int, raw: bytes) -> tuple[str, str]:
    """The head and body of the answer to bytes RAW sent as they are (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).decode("latin-1").partition("\r\n\r\n")
    return head, body


def _server_connections(session: int, port: int) -> dict[int, int]:
    """Established connections to PORT held per process of SESSION."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    held: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[3]) != session:
                continue
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        count = sum(link in inodes for link in links)
        if count:
            held[int(proc.name)] = count
    return held


def _trickle(port: int, count: int, every: float, give_up: float) -> Future[list[float]]:
    """COUNT connections that each send a request's start, then one byte of a header every EVERY seconds (a slow-loris
    client), on a thread; its result: the seconds after which the server closed each one, up to GIVE_UP."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for conn in socks:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    def run() -> list[float]:
        start, closed = time.monotonic(), {}
        pace = threading.Event()
        try:
            while len(closed) < count and time.monotonic() - start < give_up:
                for n, conn in enumerate(socks):
                    if n not in closed:
                        try:
                            conn.sendall(b"a")
                        except OSError:  # reset or broken pipe: the server has closed it
                            closed[n] = time.monotonic() - start
                pace.wait(every)  # the client's pace, not a wait for a result
        finally:
            for conn in socks:
                conn.close()
        return list(closed.values())

    return ThreadPoolExecutor(max_workers=1).submit(run)


def test_workers_die_with_a_killed_master_and_the_next_serve_takes_the_port(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    env = serve_env(serving_home, tmp_path)
    cli = CLI
    port = free_port()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    handles = []

    def start(log: Path) -> subprocess.Popen[bytes]:
        handles.append(log.open("wb"))
        return subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", "2", "--threads", "1",
                                 "--analyst-port", "0"], env=env,
                                stdout=handles[-1], stderr=subprocess.STDOUT, start_new_session=True)

    first = start(logs[0])
    second = None
    try:
        workers = wait_ready(first, logs[0], 2)
        assert len(workers) == 2
        os.kill(first.pid, signal.SIGKILL)  # the master (serve execs gunicorn in its own process)
        first.wait(timeout=30)
        # the kernel's SIGTERM starts their graceful stop at once (about a second idle, more on a loaded machine:
        # a CI run on two busy cores took over 3 s); orphans used to last ~20 s and kept the port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in workers), "orphaned workers outlived their master"
        second = start(logs[1])
        assert len(wait_ready(second, logs[1], 2)) == 2
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        try:  # twenty times the threads, connected and silent (closed after 10 s, FRAUD_CLIENT_TIMEOUT_S): gthread gave
            # each a thread for 5 s; then the balancing counted them, and a worker that stopped accepting behind the
            # other's row looked again only after a second, while the other stopped behind its row (5 s for 40)
            assert get(f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200
        finally:
            for conn in idle:
                conn.close()
    finally:
        for server in (first, second):
            if server is not None and server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
        for handle in handles:
            handle.close()


def _analyst_worker(session: int, analyst_port: int, seconds: float = 60) -> int:
    """The one worker of SESSION serving ANALYST_PORT, once one answers there (AssertionError after SECONDS)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", analyst_port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().read():
                held = _server_connections(session, analyst_port)
                if len(held) == 1:
                    return next(iter(held))
        except OSError:
            pass  # no worker accepts there (yet): the connection waits in the listen queue, and times out
        finally:
            conn.close()
    raise AssertionError(f"no worker answered on the analyst port {analyst_port} within {seconds} s")


def _serve_two_ports(serving_home: Path, tmp_path: Path, code: Path | None = None
                     ) -> tuple[Any, int, int, Path, list[Any]]:
    """`serve` (two scoring workers and the analyst worker) on a private home, with the `api` package from CODE if
    given: the server, its main and analyst ports, its log and the handles `stop_all` closes."""
    port, analyst_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    handles = [log.open("wb")]
    env = serve_env(serving_home, tmp_path)
    if code is not None:  # ahead of the installed project; and not run from the checkout, which gunicorn puts first
        env["PYTHONPATH"] = str(code)
    server = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2", "--threads", "2",
                               "--analyst-port", str(analyst_port)], env=env, cwd=tmp_path,
                              stdout=handles[0], stderr=subprocess.STDOUT, start_new_session=True)
    return server, port, analyst_port, log, handles


def test_a_reload_keeps_one_worker_on_the_analyst_port(serving_home: Path, tmp_path: Path) -> None:
    """`kill -HUP` (a reload: security.md tells operators to send one) left the analyst port with no worker every
    other time: the new workers start while the old analyst worker still holds the role's lock, so none took it,
    and analysts' pages hung. Now a scoring worker takes the role once it is free."""
    server, port, analyst_port, log, handles = _serve_two_ports(serving_home, tmp_path)
    try:
        first = wait_ready(server, log, 3)
        analyst = _analyst_worker(server.pid, analyst_port)
        for reload in range(2):  # the role was lost on every other reload
            os.kill(server.pid, signal.SIGHUP)
            deadline = time.monotonic() + 180  # the old analyst serves on until a new one serves (a busy machine: 60 s)
            while time.monotonic() < deadline and pid_alive(analyst):
                time.sleep(0.25)  # waiting for the old generation to go, not timing anything
            assert not pid_alive(analyst), f"reload {reload}: the old analyst worker is still running"
            analyst = _analyst_worker(server.pid, analyst_port)
            assert analyst not in first
            nice = {int(stat.read_text().rsplit(")", 1)[1].split()[16])  # every thread's (Linux's is per thread)
                    for stat in Path(f"/proc/{analyst}/task").glob("*/stat")}
            assert nice == {ANALYST_NICE}, nice
            pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(6)]
            for conn in pool:
                conn.request("GET", "/healthz")
                assert conn.getresponse().read()
            scoring = _server_connections(server.pid, port)
            for conn in pool:
                conn.close()
            assert sum(scoring.values()) == 6 and analyst not in scoring  # the main port is the others'
    finally:
        stop_all([server], handles)


def test_a_reload_is_answered_throughout_by_the_old_workers_until_new_ones_serve(
        serving_home: Path, tmp_path: Path) -> None:
    """gunicorn stops the old workers of a reload (`kill -HUP`) as soon as it has forked the new ones, which take
    seconds to load: requests waited in the listen queue all that time (10-15 s; over a minute with the cores busy),
    on both ports. Now each old worker serves on until a new one serves its port."""
    server, port, analyst_port, log, handles = _serve_two_ports(serving_home, tmp_path)
    try:
        wait_ready(server, log, 3)
        old = _children(server.pid)
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _children(server.pid) - old:
            time.sleep(0.02)  # waiting for the reload to fork its workers, not timing anything
        assert _children(server.pid) - old, "the reload forked no worker"
        stopped = min(_children(server.pid) - old)  # told to stop while it loads (as TTOU does): it is no successor,
        while time.monotonic() < deadline and not _opened(stopped, "fraud.db"):  # its app loads (its handlers are set)
            time.sleep(0.02)  # waiting for it to reach that point, not timing anything
        os.kill(stopped, signal.SIGTERM)  # and took every old worker with it (the server looked as if stopping)
        while time.monotonic() < deadline and pid_alive(stopped):
            time.sleep(0.05)  # waiting for it to go, not timing anything
        assert stopped not in ready_workers(log)  # it went without finishing its load
        answered: dict[int, list[int]] = {port: [], analyst_port: []}
        while time.monotonic() < deadline and not all(pids and pids[-1] not in old for pids in answered.values()):
            for target, pids in answered.items():
                conn = http.client.HTTPConnection("127.0.0.1", target, timeout=5)
                try:
                    conn.request("GET", "/healthz")  # a timeout here fails the test: nobody accepted
                    assert conn.getresponse().status == 200
                    pids.extend(_server_connections(server.pid, target))
                finally:
                    conn.close()
        handing = {int(pid) for pid in re.findall(r"worker (\d+) serves on until", log.read_text())}
        assert handing == old, (handing, old)  # every old worker served on, not only one per port
        for target, pids in answered.items():
            assert pids[:3] and set(pids[:3]) <= old, (target, pids[:3], old)  # the old ones served on
            assert pids[-1] not in old, (target, pids[-5:])  # until a new one served the port
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in old):
            time.sleep(0.1)  # waiting for the old workers to go, not timing anything
        assert not any(pid_alive(pid) for pid in old), "the old workers did not stop after handing over"
    finally:
        stop_all([server], handles)


def test_old_workers_serve_on_while_the_workers_of_a_reload_cannot_score(serving_home: Path, tmp_path: Path) -> None:
    """With the model's file damaged since the old workers loaded it, a reload's new workers cannot score (503): the
    old ones handed over to them all the same, and the service stopped scoring (a helper's fault probe, F3). Now an old
    worker that can score serves on until a new one can too, and a new one that cannot takes no connections."""
    server, port, analyst_port, log, handles = _serve_two_ports(serving_home, tmp_path)
    home = tmp_path / "home"  # the server's private copy (`serve_env`)
    try:
        wait_ready(server, log, 3)
        old = _children(server.pid)
        for model in home.rglob("model.txt"):
            model.write_text(model.read_text() + "\n")  # its checksum no longer matches its manifest's
        os.kill(server.pid, signal.SIGHUP)
        unable: set[int] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(unable) < 3:
            time.sleep(0.25)  # waiting for the new workers to load and check, not timing anything
            unable = {int(pid) for pid in re.findall(r"worker (\d+) of the reload cannot score", log.read_text())}
        assert len(unable) == 3 and not unable & old, (unable, old, log.read_text()[-3000:])
        for target in (port, analyst_port):
            for _ in range(8):  # new connections, one after another: each answered by an old worker, ready
                conn = http.client.HTTPConnection("127.0.0.1", target, timeout=10)
                try:
                    conn.request("GET", "/readyz")
                    answer = conn.getresponse()
                    assert answer.status == 200 and json.loads(answer.read())["ready"] is True
                    assert set(_server_connections(server.pid, target)) <= old, (target, old)
                finally:
                    conn.close()
        assert all(pid_alive(pid) for pid in old)
        assert unable <= _children(server.pid)  # the new ones wait too (they may yet become able)
    finally:
        stop_all([server], handles)  # and it stops: the old workers wait for no new one then


def test_a_reload_to_code_that_fails_to_load_leaves_the_old_workers_serving(serving_home: Path, tmp_path: Path) -> None:
    """A deploy whose code does not import, then `kill -HUP`: gunicorn halted when a new worker could not load the
    application, and stopped the old workers with it (a helper's fault probe, F9). Now the new workers say why and
    cannot score, the old ones serve on, and a reload to fixed code completes the handover."""
    code = tmp_path / "code"
    shutil.copytree(Path(api.__file__).parent, code / "api", ignore=shutil.ignore_patterns("__pycache__"))
    app = code / "api" / "app.py"
    good = app.read_text()
    server, port, analyst_port, log, handles = _serve_two_ports(serving_home, tmp_path, code)
    try:
        wait_ready(server, log, 3)
        old = _children(server.pid)
        app.write_text(good + "\nthis is not python (\n")
        os.kill(server.pid, signal.SIGHUP)
        broken: set[int] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(broken) < 3 and server.poll() is None:
            time.sleep(0.25)  # waiting for the new workers to fail their load, not timing anything
            broken = {int(pid) for pid in re.findall(r"worker (\d+) of the reload cannot load the application",
                                                     log.read_text())}
        assert server.poll() is None, log.read_text()[-3000:]  # gunicorn halted: every worker gone
        assert len(broken) == 3 and not broken & old, (broken, old, log.read_text()[-3000:])
        for target in (port, analyst_port):
            for _ in range(5):  # each answered by an old worker, which scores
                status, ready = get(f"http://127.0.0.1:{target}/readyz")
                assert status == 200 and ready["ready"] is True, ready
                held = _server_connections(server.pid, target)
                assert not set(held) & broken, (held, broken)
        assert all(pid_alive(pid) for pid in old)

        app.write_text(good)  # the fix, deployed, and a reload
        os.kill(server.pid, signal.SIGHUP)
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in old | broken):
            time.sleep(0.25)  # waiting for the handover to the fixed code, not timing anything
        assert not any(pid_alive(pid) for pid in old | broken), log.read_text()[-3000:]
        for target in (port, analyst_port):
            status, ready = get(f"http://127.0.0.1:{target}/readyz")
            assert status == 200 and ready["ready"] is True, ready
    finally:
        stop_all([server], handles)


def _opened(pid: int, name: str) -> bool:
    """Whether process PID holds a file named NAME open."""
    try:
        return any(os.readlink(fd).endswith("/" + name) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    """The live child processes of PID."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children if pid_alive(int(child))}


def test_the_workers_metrics_live_in_memory_not_on_the_homes_disk(tmp_path: Path) -> None:
    """prometheus_client maps its files and writes into their holes: on a full disk under FRAUD_HOME every worker
    died with SIGBUS as it counted a request (a helper's fault probe). `serve` keeps them in /dev/shm, in a folder of
    this user's alone, one per home and port; a folder others may write is not used."""
    from api.cli.admin import _metrics_dir

    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm on this machine: the home's metrics folder is used")
    first, second = _metrics_dir(tmp_path / "a", 8000), _metrics_dir(tmp_path / "b", 8000)
    mine = Path("/dev/shm") / f"fraud-service-{os.getuid()}"
    assert first.parent == mine == second.parent and first != second and first.name.endswith("-8000")
    assert _metrics_dir(tmp_path / "a", 8001) != first and _metrics_dir(tmp_path / "a", 8000) == first
    assert (mine.stat().st_mode & 0o777) == 0o700
    mine.chmod(0o777)
    try:
        assert _metrics_dir(tmp_path / "a", 8000) == tmp_path / "a" / "metrics" / "8000"
    finally:
        mine.chmod(0o700)


def test_a_master_removes_its_metrics_folder_only_while_it_is_its_own(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill -TERM` of one instance, then `serve` on the same home and port at once: the new one emptied the folder
    and made it its own, then the old master's exit removed it, and the new instance answered 500 to everything (a
    helper's fault probe). A master removes the folder only while it names that master."""
    from types import SimpleNamespace

    from api.gunicorn_conf import OWNER, on_exit

    folder = tmp_path / "metrics-8000"
    folder.mkdir()
    (folder / OWNER).write_text("4242")  # the newer instance's master
    monkeypatch.setenv("FRAUD_METRICS_DIR", str(folder))
    on_exit(SimpleNamespace(pid=4141))
    assert (folder / OWNER).read_text() == "4242"
    on_exit(SimpleNamespace(pid=4242))
    assert not folder.exists()
