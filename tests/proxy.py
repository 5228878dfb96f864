"""A TCP proxy a test puts between the service and PostgreSQL, to make the database refuse or hang on demand.

- `forward()`: bytes flow both ways (connections cut by an earlier fault are gone; new ones work).
- `refuse()`: the port is closed (connecting fails at once) and open connections are reset.
- `hang()`: connections are accepted and kept, but nothing flows either way, like a stalled server or a
  network that drops packets: the kernel acknowledges, nobody answers.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self.port = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._listen()
        self._thread = threading.Thread(target=self._pump, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self) -> None:
        with self._lock:
            if self.mode == "hang":
                self._cut()
            self.mode = "forward"
            if self._listener is None:
                self._listen()

    def refuse(self) -> None:
        with self._lock:
            self.mode = "refuse"
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self._cut(reset=True)

    def hang(self) -> None:
        with self._lock:
            self.mode = "hang"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self._listener is not None:
                self._listener.close()
            self._cut()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _cut(self, reset: bool = False) -> None:
        for pair in self._pairs:
            for sock in pair:
                if reset:  # RST instead of FIN, as a server that went away
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
        self._pairs.clear()

    def _pump(self) -> None:
        """One thread moves every byte: accept, then copy between the sockets of each pair (unless hung)."""
        while not self._stop.is_set():
            selector = selectors.DefaultSelector()
            with self._lock:  # registered under the lock: another thread closes sockets only while holding it
                if self._listener is not None:
                    selector.register(self._listener, selectors.EVENT_READ, None)
                if self.mode == "forward":
                    for client, server in self._pairs:
                        selector.register(client, selectors.EVENT_READ, (client, server))
                        selector.register(server, selectors.EVENT_READ, (server, client))
            try:
                ready = selector.select(timeout=0.05)
            except (OSError, ValueError):  # a socket was closed by another thread meanwhile
                ready = []
            selector.close()
            for key, _ in ready:
                with self._lock:
                    self._serve(key)

    def _serve(self, key: selectors.SelectorKey) -> None:
        if key.data is None:
            if self._listener is None or key.fileobj is not self._listener:
                return
            with contextlib.suppress(BlockingIOError, OSError):
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
                self._pairs.append((client, server))
            return
        if self.mode != "forward":
            return
        source, target = key.data
        if (source, target) not in self._pairs and (target, source) not in self._pairs:
            return
        try:
            data = source.recv(65536)
            if data:
                target.sendall(data)
                return
        except OSError:
            pass
        pair = next(p for p in self._pairs if source in p)
        self._pairs.remove(pair)
        for sock in pair:
            sock.close()
