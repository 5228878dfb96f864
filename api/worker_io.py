"""gunicorn's connections as `serve`'s workers handle them (api.gunicorn_worker): the API's JSON error shape for
gunicorn's own answers, bounds on silent and slow clients, and closes that do not hold a worker's main thread."""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn


def error_body(code: str, message: str) -> bytes:
    """An answer's body in the API's error shape, from the worker rather than the application (no request id)."""
    return json.dumps({"error": code, "message": message, "request_id": None}).encode()


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answers in the API's JSON error shape instead of gunicorn's HTML page: to a request it
    could not parse (a request line over its limit: 414, headers too large: 431, a malformed line or header: 400,
    and its other refusals), and a 500 for an error that escaped the application. No request id: the request
    did not reach the application's logging, or the application failed before it answered."""
    code = "internal_error" if status == 500 else reason.lower().replace(" ", "_")  # the app's own 500 code
    body = error_body(code, message or reason)
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def bound_silence(listeners: Sequence[Any], seconds: float) -> None:
    """A request thread waits on a silent client at most SECONDS per read or write, then its connection is dropped.

    gthread hands a connection to a thread as soon as its first bytes arrive, and the thread then blocks until
    the request's headers (and body) are in: forty connections that sent half a header held every thread, and
    /healthz went unanswered. The kernel's receive and send timeouts, set on the listening sockets, are inherited
    by every connection accepted from them; they bind blocking reads and writes only (the poller's are not)."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for listener in listeners:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class Closer:
    """gunicorn's graceful close (shut the write side, then read what the client still sends for up to 2 s, so that
    unread bytes do not turn the close into a reset that truncates the answer), run off the worker's main thread.

    gthread closes a connection whose request failed from its main thread, the one that accepts and dispatches: a
    client that sent half a request and stayed silent held the whole worker for those 2 s, one such connection
    after another (forty of them kept /healthz waiting half a minute). Here at most THREADS closes linger at once
    and at most BACKLOG wait for a thread; past that a connection is closed at once."""

    def __init__(self, graceful: Callable[..., None], threads: int = 4, backlog: int = 256) -> None:
        self._graceful = graceful
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="closer")
        self._pending = threading.BoundedSemaphore(threads + backlog)

    def close(self, sock: socket.socket, timeout: float = 2.0, max_drain: int = 65536) -> None:
        if not self._pending.acquire(blocking=False):
            util.close(sock)
            return
        try:
            self._pool.submit(self._linger, sock, timeout, max_drain)
        except RuntimeError:  # the pool is shut down: the worker is exiting
            self._pending.release()
            util.close(sock)

    def _linger(self, sock: socket.socket, timeout: float, max_drain: int) -> None:
        try:
            self._graceful(sock, timeout, max_drain)
        finally:
            self._pending.release()


class PacedConn(TConn):
    """A connection whose request (its headers and body) must arrive by `deadline`, a time the worker sets when a
    thread takes the request: the kernel's receive timeout (`bound_silence`) bounds each read, so a client
    trickling a byte within every timeout held a thread for as long as it liked (sixteen of them, every thread of
    `serve`'s two workers, and no key needed)."""

    deadline = math.inf

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if fresh and isinstance(self.parser.unreader, SocketUnreader):  # not an HTTP/2 connection's
            self.parser.unreader = PacedUnreader(self.sock, self)


class PacedUnreader(SocketUnreader):
    """gunicorn's socket reader, waiting for more of a request only until its connection's deadline (set when a
    thread takes the request). Bytes already in the socket are read whatever the time. Plain HTTP/1 only: `serve`
    turns on neither TLS (whose decrypted bytes `poll` would not see) nor HTTP/2."""

    def __init__(self, sock: socket.socket, conn: PacedConn) -> None:
        super().__init__(sock)
        self._conn = conn

    def chunk(self, size_hint: int | None = None) -> bytes:
        left = self._conn.deadline - time.monotonic()
        poll = select.poll()
        poll.register(self.sock.fileno(), select.POLLIN)
        if not poll.poll(None if left == math.inf else max(0.0, left) * 1000):
            raise TimeoutError("the client did not send its whole request in time")  # logged by SilentClients
        return super().chunk(size_hint)  # type: ignore[no-any-return]


class SilentClients(logging.Filter):
    """gthread logs a client dropped by `bound_silence` as "Socket error processing request." with a traceback
    at ERROR; under a slow-loris attack that is a traceback per connection. Here it is one WARNING line."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.msg == "Socket error processing request." and isinstance(error, BlockingIOError | TimeoutError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "dropped a client silent for %g s mid-request, or not done sending it in as long "
                "(FRAUD_CLIENT_TIMEOUT_S)", (self.seconds,), None, None)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
