"""The evidence writer process: one committer for all of a server's workers, reached over a Unix socket.

`fraud-service serve` runs an `EvidenceServer` in its own process beside gunicorn and tells the
workers where it listens (FRAUD_EVIDENCE_SOCKET); each worker's `RemoteEvidenceWriter` sends an
assessment and waits for the answer, which comes only after the transaction holding it has
committed (the API still answers only with evidence on record).

Why a process of its own: the evidence chain is one sequence, so its commits are serial. Inside
the workers, the writer thread competes for the interpreter lock with the request threads, and
every SQLite call releases that lock and waits to take it back; under load a batch held the
chain's lock for 1.4-3 ms at the median instead of about 0.4 ms, and the other worker waited
behind it. Here nothing competes: the loop reads every assessment that has arrived from any
worker, commits them together (`BatchWriter`, the same code as the in-process writer thread)
and answers each.

The socket lives in a directory only this user can enter (created with `tempfile.mkdtemp`), so
messages are pickled: whoever can connect could edit the database file as well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import pickle
import selectors
import socket
import struct
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from fraud_service.store.writer import BatchWriter, DatabaseDown, Pending

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
"""A message longer than this is refused (an assessment's evidence is a few kilobytes)."""


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


class WriterError(RuntimeError):
    """The evidence writer failed on an assessment for a reason other than the database (a bug); nothing stored."""


class EvidenceServer:
    """Accepts assessments from many connections and commits whatever has arrived in one transaction."""

    def __init__(self, engine: Engine, path: Path, max_batch: int = 256) -> None:
        self.writer = BatchWriter(engine)
        self.path = path
        self.max_batch = max_batch
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(256)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._buffers: dict[socket.socket, bytearray] = {}
        self.stored = 0

    def run_once(self, timeout: float | None) -> int:
        """Wait up to TIMEOUT seconds for messages, then answer all that have arrived; how many."""
        ready: list[tuple[socket.socket, Any]] = []
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._accept()
            else:
                self._read(key.fileobj, ready)  # type: ignore[arg-type]
        stores = []
        for conn, message in ready:
            kind = message[0] if isinstance(message, tuple) and message else None
            if kind == "store" and len(message) == 6:
                stores.append((conn, message))
            elif kind == "ping":
                self._reply(conn, ("pong",))
            else:
                self._reply(conn, ("error", f"unknown message {str(kind)[:40]!r}"))
        for start in range(0, len(stores), self.max_batch):
            self._commit(stores[start:start + self.max_batch])
        return len(ready)

    def serve_forever(self, stop: threading.Event, tick: float = 0.5) -> None:
        while not stop.is_set():
            self.run_once(tick)

    def close(self) -> None:
        for conn in list(self._buffers):
            self._drop(conn)
        self._selector.unregister(self._listener)
        self._listener.close()
        self._selector.close()
        self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        self._selector.register(conn, selectors.EVENT_READ, "client")

    def _read(self, conn: socket.socket, ready: list[tuple[socket.socket, Any]]) -> None:
        buffer = self._buffers[conn]
        try:
            data = conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if size > MAX_MESSAGE:
                log.error("dropping an evidence client that sent a %d-byte message", size)
                self._drop(conn)
                return
            if len(buffer) < _LENGTH.size + size:
                break
            message = pickle.loads(bytes(buffer[_LENGTH.size:_LENGTH.size + size]))
            del buffer[:_LENGTH.size + size]
            ready.append((conn, message))

    def _commit(self, stores: list[tuple[socket.socket, Any]]) -> None:
        batch = [Pending(row, payload, actor, at, Future(), links)
                 for _, (_, row, payload, actor, at, links) in stores]
        self.writer.commit(batch)
        for (conn, _), pending in zip(stores, batch, strict=True):
            error = pending.future.exception()
            if error is None:
                self.stored += 1
                self._reply(conn, ("ok", pending.future.result(), pending.row.get("case_id")))
            elif isinstance(error, DatabaseDown):
                self._reply(conn, ("down", str(error)))
            else:
                self._reply(conn, ("error", f"{type(error).__name__}: {error}"))

    def _reply(self, conn: socket.socket, message: Any) -> None:
        # a client has one message outstanding per connection, so an answer always fits in the socket's buffer
        try:
            conn.sendall(_frame(message))
        except OSError:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        if self._buffers.pop(conn, None) is not None:
            self._selector.unregister(conn)
            conn.close()


class RemoteEvidenceWriter:
    """A worker's side of the evidence writer process: the same `store` as `EvidenceWriter`, one connection per
    thread. When the process cannot be reached, `store` raises DatabaseDown (no decision without a record)."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def store(self, row: dict[str, Any], payload: dict[str, Any], actor: str, at: dt.datetime,
              links: dict[str, str] | None = None) -> int | None:
        """Commit one assessment (see `EvidenceWriter.store`): its event's sequence number, or None when ROW's
        return_id is already stored. The case id the writer gave it, if any, is written into ROW and the
        payload's response."""
        answer = self._call(("store", row, payload, actor, at, links))
        if answer[0] == "ok":
            _, seq, case_id = answer
            if case_id is not None:
                row["case_id"] = case_id
                payload["response"]["case_id"] = case_id
            return seq
        if answer[0] == "down":
            raise DatabaseDown(answer[1])
        raise WriterError(f"the evidence writer could not store the assessment: {answer[1]}")

    def ping(self) -> bool:
        """Whether the writer process answers."""
        try:
            return self._call(("ping",))[0] == "pong"
        except DatabaseDown:
            return False

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _call(self, message: Any) -> Any:
        conn: socket.socket | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(self.timeout)
                with self._lock:
                    self._connections.append(conn)
                self._local.conn = conn
                conn.connect(self.path)
            conn.sendall(_frame(message))
            (size,) = _LENGTH.unpack(_receive(conn, _LENGTH.size))
            return pickle.loads(_receive(conn, size))
        except OSError as exc:
            self._forget(conn)
            raise DatabaseDown(f"the evidence writer process ({self.path}) is not answering: {exc}") from exc

    def _forget(self, conn: socket.socket | None) -> None:
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close()


def _receive(conn: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            raise ConnectionResetError("the evidence writer closed the connection")
        chunks += chunk
    return bytes(chunks)


def socket_path() -> Path:
    """A new socket path in a fresh directory only this user can enter (short enough for AF_UNIX)."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="fraud-evidence-"))
    os.chmod(directory, 0o700)
    return directory / "writer.sock"
