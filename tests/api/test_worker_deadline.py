"""The worker's deadline for a request's bytes counts from when a thread takes the request, not from its first
bytes: a client waiting for `100 Continue` sends its body only once a thread reads, and was cut after waiting in
the server's own queue."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_a_body_sent_after_100_continue_is_read_though_the_request_waited_for_a_thread(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FRAUD_CLIENT_TIMEOUT_S": "1", "FRAUD_HOME": str(tmp_path)}
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "--workers", "1", "--threads", "1",
                               "--worker-class", "api.gunicorn_worker.BalancedThreadWorker",
                               "--bind", f"127.0.0.1:{port}", "tests.api.held_app:app"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)  # waiting for the server to listen, not timing anything
        holder = socket.create_connection(("127.0.0.1", port), timeout=10)
        holder.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # the only thread: 2 s
        time.sleep(0.2)  # the holder's request reaches the thread first (ordering, not timing)
        body = b"x" * 200_000
        waiter = socket.create_connection(("127.0.0.1", port), timeout=10)
        waiter.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body))
        assert waiter.recv(64).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue"  # sent once a thread has it
        waiter.sendall(body)
        answer = b""
        while chunk := waiter.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n200000"), answer[:300]
        assert holder.recv(4096).startswith(b"HTTP/1.1 200 ")
        holder.close()
        waiter.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
