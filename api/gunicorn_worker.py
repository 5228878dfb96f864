"""gunicorn's threaded worker, taking only its share of the connections.

gunicorn's workers share one listening socket, and whichever worker's main thread wakes first
accepts. A client that opens its connection pool at once (as a load generator, or the returns
workflow, does) ended up almost entirely on one worker: 15 of 16 keep-alive connections on one
process, whose interpreter lock then capped the service at about one core while the other
worker idled. Requests on a kept-alive connection never move to another worker.

Here each worker publishes how many connections it holds in a small shared table (created in
the master before the workers are forked) and stops accepting while it holds two more than the
least loaded live worker; the others then take the next connections, and a stopped worker
looks at the table again every RECHECK_S. A worker's row
is cleared when it exits (`api.gunicorn_conf.child_exit`), so a dead worker never holds the
others back; a hung one is killed by gunicorn's timeout. Connections a worker took while
another was still loading stay with it (kept-alive connections are not moved).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import IO, Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from api.worker_io import Closer, PacedConn, SilentClients, bound_silence, error_body, write_json_error
from api.worker_table import (
    ANALYST,
    COUNTS,
    FIT,
    RELOADED,
    SCORING,
    SERVES,
    STOPPING,
    UNABLE,
    able_elder,
    fair_limit,
    reload_pending,
    slot,
    successor,
    verdict,
)
from fraud_service.config import Settings

RECHECK_S = 0.02
"""How often a worker that has stopped accepting looks at the others' rows again (gthread waits up to a second)."""

ROLE_RETRY_S = 1.0
"""How often a scoring worker tries to take the analyst role, free when its worker has ended."""

HANDOVER_S = 600.0
"""How long an old worker serves on after a reload at most, waiting for a new one to serve its port: a safety net (a new
worker hung while loading is not ended by gunicorn's timeout, which counts from its first heartbeat)."""

FITNESS_S = 0.5
"""How often each worker checks whether it can score while a reload's old workers live."""

UNABLE_AFTER_S = 5.0
"""How long every check of an old worker must fail before it counts as unable to score (`_check_fitness`)."""

ANALYST_NICE = 5
"""How much lower the analyst worker's CPU priority is than the scoring workers' (Linux nice)."""


def unloaded(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """What a worker whose application failed to load answers (`BalancedThreadWorker.load_wsgi`): a 503 in the API's
    error shape, naming no code (the log has the traceback)."""
    body = error_body("unavailable", "this worker could not load the service's code after a reload; the server log "
                                     "says why")
    start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body))), ("Retry-After", "5")])
    return [body]


class BalancedThreadWorker(ThreadWorker):
    """`gthread`, except that a worker ahead of the others stops accepting until they catch up.

    With an analyst port (`serve` sets FRAUD_ANALYST_PORT and FRAUD_ANALYST_LOCK), one worker, whichever first
    takes the lock file, serves only that port, at a lower CPU priority: analysts' pages (cases of thousands of
    assessments) then share the cores with scoring through the kernel's scheduler, not through a scoring
    worker's interpreter lock. The other workers serve only the main port. When the analyst worker ends, its
    lock is released and a scoring worker takes the role within ROLE_RETRY_S: the one gunicorn starts in its
    place, or, after a reload (`kill -HUP`: the new workers start while the old ones still hold the lock), one of
    the new ones, which then leaves the main port to the others. Through a reload the old workers serve on until a
    new one serves their port (`handle_exit`; the table also records each row's worker and whether it serves)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._configured_connections = 0
        self._silence = 10.0  # FRAUD_CLIENT_TIMEOUT_S, read when the worker starts
        self.analyst = False
        self._role: IO[str] | None = None  # the lock file, held (flock) by the analyst worker for its life
        self._listeners: list[Any] = []  # both ports' listening sockets, as gunicorn handed them over
        self._analyst_port = 0
        self._role_tried = 0.0
        self._handover: tuple[float, int] | None = None  # while handing over: when it ends at the latest
        # (monotonic), and the youngest worker's age when the reload began
        self._serving = False  # in its loop: loaded, and taking connections
        super().__init__(*args, **kwargs)

    def init_process(self) -> None:
        port, lock = os.environ.get("FRAUD_ANALYST_PORT"), os.environ.get("FRAUD_ANALYST_LOCK")
        silence = Settings.from_env().client_timeout_s
        self._silence = silence
        if port and lock:
            self._listeners, self._analyst_port = list(self.sockets), int(port)
            self._role = open(lock, "a")  # noqa: SIM115 - kept open for the worker's life: its lock is the role
            self.analyst = self._lock_role()
            self.sockets = [s for s in self._listeners if (s.getsockname()[1] == self._analyst_port) == self.analyst]
        util.write_error = write_json_error  # gunicorn's Worker.handle_error writes through this name
        util.close_graceful = Closer(util.close_graceful).close  # and gthread closes through this one
        bound_silence(self.sockets, silence)
        self.log.error_log.addFilter(SilentClients(silence))
        super().init_process()

    def load_wsgi(self) -> None:
        """The application, loaded. A worker of a reload whose code fails to load (a deploy that does not import)
        made gunicorn halt, stopping the old workers too: it now says why in the log, cannot score (so the old workers
        serve on, `_check_fitness`), and answers 503 only once no old worker is left (HANDOVER_S). At start a failure
        still stops the server: there is no old worker to serve on."""
        try:
            super().load_wsgi()
        except Exception:
            if self.age <= RELOADED[0] or not reload_pending():  # not a worker of a reload the old ones serve through
                raise
            self.log.exception("worker %s of the reload cannot load the application: the old workers serve on for "
                               "up to %g s; fix the code, then reload again", self.pid, HANDOVER_S)
            FIT[slot(self.age)] = UNABLE
            self.wsgi = unloaded

    def _lock_role(self) -> bool:
        """Whether this worker now holds the analyst role's lock."""
        assert self._role is not None
        try:
            fcntl.flock(self._role, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _become_analyst(self) -> None:
        """Every thread of this worker ANALYST_NICE lower in priority: Linux keeps a nice value per thread, and a
        worker that takes the role mid-life already has its request threads (a review found them still at 0)."""
        target = os.getpriority(os.PRIO_PROCESS, 0) + ANALYST_NICE  # this thread's, as the others have it
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.setpriority(os.PRIO_PROCESS, int(tid), target)
        self.log.info("worker %s serves the analyst port %s (nice %d)", self.pid, self._analyst_port, ANALYST_NICE)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Told to stop. By a reload (`kill -HUP`) while a worker it started loads, a serving worker serves on until one
        of them serves its port (`_hand_over`): gunicorn stops the old workers as soon as it has forked the new ones,
        and requests waited in the listen queue while those loaded (10-15 s; over a minute on busy cores). The master
        says so again every loop, which changes nothing then. Else (the server stopping, none coming): at once.
        Either way an analyst worker gives the role up now: a new worker takes it while this one finishes its pages."""
        mark = RELOADED[0]
        if self._handover is None and self.alive and self._serving and self.age <= mark \
                and self._waits(mark):
            self._handover = (time.monotonic() + HANDOVER_S, mark)
            self.log.info("worker %s serves on until a worker of the reload serves", self.pid)
        elif self._handover is None:
            # nobody's successor from now: the server stopping stops its old workers too (every new one is told
            # to), and a worker still loading when the next reload comes leaves the waiting to the newest ones
            SERVES[slot(self.age)], COUNTS[slot(self.age)] = STOPPING, 0
            if not self._serving:  # loading: it holds nothing yet; finishing the load cost seconds of CPU and memory
                os._exit(0)
            super().handle_exit(sig, frame)
        if self.analyst and self._role is not None:
            fcntl.flock(self._role, fcntl.LOCK_UN)

    def _own_role(self) -> int:
        return ANALYST if self.analyst else SCORING

    def _waits(self, mark: int) -> bool:
        """Whether a worker of the reload after age MARK loads to serve this worker's role, or serves it unable to score
        while this one can, or has not checked yet (`successor`; a worker of a reload that fails to load says so at
        once, sooner than an old one checks)."""
        return successor(mark, self._own_role(), FIT[slot(self.age)] != UNABLE) in ("loading", "unable")

    def _check_fitness(self, once: bool = False) -> None:
        """While a reload's old workers live, each worker checks every FITNESS_S whether it can score (`/readyz`'s
        checks: the model loaded, the evidence database and the online store answering) and says so in its row. An old
        worker that can score then hands over only to a new one that can too: with a damaged model, or a database
        refusing new connections, the new workers answered 503 and the old ones, which still scored, stopped.

        A new worker is unable from its first failed check (it would answer 503); an old one only once every check has
        failed for UNABLE_AFTER_S (one probe slow on busy cores ended its handover to workers that could not score at
        all). Outside a reload the row says nothing (0: counted as able), so that no earlier verdict outlives it."""
        service = getattr(self.wsgi, "extensions", {}).get("fraud")
        if service is None:  # an application that did not load (`load_wsgi`) has said so in its row already
            return
        from fraud_service.health import readiness  # here, not in the master, which imports this module

        own, failing_since = slot(self.age), None
        while True:
            if not reload_pending():
                FIT[own], failing_since = 0, None
            else:
                try:
                    checks = readiness(service)
                except Exception as exc:  # noqa: BLE001 - whatever broke the check, the worker cannot say it scores
                    checks = {"readiness": {"ok": False, "detail": f"the check failed: {type(exc).__name__}"}}
                ok, now, old = all(check["ok"] for check in checks.values()), time.monotonic(), self.age <= RELOADED[0]
                was = FIT[own]
                FIT[own], failing_since = verdict(ok, old, was, failing_since, now, UNABLE_AFTER_S)
                failed_for = 0.0 if failing_since is None else now - failing_since
                if FIT[own] == UNABLE != was:
                    why = "; ".join(f"{name}: {check.get('detail')}" for name, check in checks.items()
                                    if not check["ok"])
                    self.log.warning("worker %s cannot score for %g s (%s): it hands over to the reload's workers"
                                     if old else "worker %s of the reload cannot score (%s): the old workers serve on "
                                     "meanwhile", *((self.pid, failed_for, why) if old else (self.pid, why)))
            if once:
                return
            time.sleep(FITNESS_S)  # a period, not a wait for something

    def _yielding(self) -> bool:
        """Whether this worker cannot score while a worker of the generation before the reload can (`_check_fitness`):
        it then takes no connections, and closes those it holds after their next answer, so that the old one answers
        them. Once the old generation has gone, it serves whatever it can."""
        return FIT[slot(self.age)] == UNABLE and reload_pending() and able_elder(self._own_role())

    def _hand_over(self) -> None:
        """While handing over: stop once a younger worker serves this worker's port, none is left to (they failed to
        load, or the server is stopping: every new worker was told to stop), or HANDOVER_S have passed. Its row
        then stops counting its connections: the new workers' share is not capped by a worker leaving."""
        if self._handover is not None and self.alive and (
                time.monotonic() > self._handover[0] or not self._waits(self._handover[1])):
            self.alive = False  # the loop ends after this wait: gthread's graceful drain follows
            COUNTS[slot(self.age)], SERVES[slot(self.age)] = 0, STOPPING  # nobody waits for it any more

    def run(self) -> None:
        """The analyst worker lowers its priority once loaded (loading at nice 5 made it the last of a reload's new
        workers to serve, by tens of seconds); then the loop."""
        self._check_fitness(once=True)  # before it takes a connection: one it cannot score is left to an old worker
        self._serving = True
        threading.Thread(target=self._check_fitness, name="fitness", daemon=True).start()
        if self.analyst:
            self._become_analyst()
        super().run()

    def handle_request(self, req: Any, conn: Any) -> Any:
        """A scoring connection an analyst worker still holds from before it took the role is answered, then closed
        (`Connection: close`), so the client reconnects to a scoring worker."""
        if (self.analyst and conn.server[1] != self._analyst_port) or self._yielding():
            req.must_close = True
        return super().handle_request(req, conn)

    def _take_free_role(self) -> None:
        """A scoring worker takes the analyst role when no worker holds it (checked every ROLE_RETRY_S): it stops
        accepting on the main port (its open connections are answered once more, then closed) and serves the
        analyst port."""
        now = time.monotonic()
        if self.analyst or self._role is None or not self.alive or self._handover is not None \
                or FIT[slot(self.age)] == UNABLE or now - self._role_tried < ROLE_RETRY_S:
            return
        self._role_tried = now
        if not self._lock_role():
            return
        self.set_accept_enabled(False)  # the main port's listeners leave the poller
        self.analyst = True
        self.sockets = [s for s in self._listeners if s.getsockname()[1] == self._analyst_port]
        bound_silence(self.sockets, self._silence)
        self._become_analyst()
        self.set_accept_enabled(True)  # in this very wait, not the next loop's

    def accept(self, listener: socket.socket) -> None:
        """A new connection waits in the poller for its first bytes, as a kept-alive one does, and reaches a thread
        only then: gthread handed it to a thread at once, which waited up to 5 s for a byte, so 40 connections that
        sent nothing held every thread of two workers for 13 s (no key needed). One silent for FRAUD_CLIENT_TIMEOUT_S
        is closed."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(False)
        conn = PacedConn(self.cfg, client, address, listener.getsockname())
        conn.timeout = time.monotonic() + self._silence  # murder_pending closes it then
        self.pending_conns.append(conn)
        self.poller.register(client, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """While this worker is not accepting, it looks at the others' rows again every RECHECK_S instead of every
        second: a worker that stopped behind another's row that has grown since is woken by nothing else (silent
        connections make no events). Both workers stopped so at once, each behind the other's older row, and 40
        silent connections kept a new one waiting in the listen queue five seconds."""
        if not self._accepting and self.alive:
            timeout = min(timeout, RECHECK_S)
        self._take_free_role()
        self._hand_over()
        super().wait_for_and_dispatch_events(timeout)

    def handle(self, conn: TConn) -> Any:
        """A thread takes a request whose first bytes are in: the rest of it, headers and body, must follow within
        FRAUD_CLIENT_TIMEOUT_S from now. From now, not from when its first bytes came: a client that waits for
        `100 Continue`, or whose body is larger than the socket's buffer, sends the rest only once a thread reads,
        and a request that waited for a thread would have been cut for the server's own queue."""
        conn.deadline = time.monotonic() + self._silence
        return super().handle(conn)

    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        """Read by gthread's loop before each wait: publishes this worker's count and returns its current cap (the
        analyst worker, on its own port, neither counts nor is capped)."""
        own = slot(self.age)
        if not self.alive:  # stopping: it takes no more connections, and its row no longer caps the others
            COUNTS[own] = 0
            return self._configured_connections
        SERVES[own] = self._own_role()
        if self._yielding():
            COUNTS[own] = 0  # none for this one meanwhile
            return 0
        if self.analyst:
            COUNTS[own] = 0
            return self._configured_connections
        COUNTS[own] = self.nr_conns + 1
        fair = fair_limit(COUNTS, own)
        return self._configured_connections if fair is None else min(self._configured_connections, fair)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._configured_connections = value
