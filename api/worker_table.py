"""The table the workers of one `serve` share (api.gunicorn_worker): per worker, the connections it holds, its age,
whether it serves and in which role, and whether it can score; and the youngest worker's age when the last reload
began. Made at import in the master (anonymous shared memory), before the workers are forked: each inherits it.

A row is a worker's slot (`slot(age)`); the master fills it when it forks the worker (`born`, from
`api.gunicorn_conf.pre_fork`) and empties it when the worker exits (`clear`, from `child_exit`)."""

from __future__ import annotations

import mmap
from collections.abc import Sequence

SLOTS = 256
_TABLE = mmap.mmap(-1, SLOTS * 8 * 4 + 8)
COUNTS = memoryview(_TABLE)[:SLOTS * 8].cast("q")  # per slot: connections held + 1, or 0 for no live worker
BORN = memoryview(_TABLE)[SLOTS * 8:SLOTS * 16].cast("q")  # per slot: the age of the worker forked into it, or 0
SERVES = memoryview(_TABLE)[SLOTS * 16:SLOTS * 24].cast("q")  # per slot: SCORING or ANALYST once in its loop,
# STOPPING once told to stop without handing over, or done handing over (it is nobody's successor), 0 while it loads
FIT = memoryview(_TABLE)[SLOTS * 24:SLOTS * 32].cast("q")  # per slot: ABLE or UNABLE as its last readiness check
# (`/readyz`'s) found it, checked only while a reload's old workers live; 0 before it has checked
RELOADED = memoryview(_TABLE)[SLOTS * 32:].cast("q")  # [0]: the youngest worker's age when the last reload began
SCORING, ANALYST, STOPPING = 1, 2, 3
ABLE, UNABLE = 1, -1


def slot(age: int) -> int:
    """The table row of the worker gunicorn numbered AGE."""
    return age % SLOTS


def born(age: int) -> None:
    """The master is forking the worker numbered AGE (`api.gunicorn_conf.pre_fork`)."""
    BORN[slot(age)], SERVES[slot(age)], FIT[slot(age)] = age, 0, 0


def clear(age: int) -> None:
    """Forget the worker numbered AGE (it has exited): its connections, and that it lives."""
    COUNTS[slot(age)] = BORN[slot(age)] = SERVES[slot(age)] = FIT[slot(age)] = 0


def reloading(youngest: int) -> None:
    """A reload (`kill -HUP`) begins: the workers up to age YOUNGEST are the old ones (api.gunicorn_conf.on_reload)."""
    RELOADED[0] = youngest


def reload_pending() -> bool:
    """Whether a worker older than the last reload still lives (it may be handing over to the new ones)."""
    mark = RELOADED[0]
    return any(0 < BORN[row] <= mark for row in range(SLOTS))


def successor(after: int, role: int, fit: bool) -> str:
    """Whether a worker forked after the one numbered AFTER (the youngest when a reload began) serves ROLE and, when
    the asking worker is FIT, can score too ("serving"); serves ROLE but cannot score while the asking worker can
    ("unable": a damaged model, a database refusing new connections); is still loading ("loading"); or none lives that
    is not stopping ("none"). A worker of the reload that has not checked yet counts as able: it checks as it starts."""
    younger = [row for row in range(SLOTS) if BORN[row] > after and SERVES[row] != STOPPING]
    serving = [row for row in younger if SERVES[row] == role]
    if any(not fit or FIT[row] != UNABLE for row in serving):
        return "serving"
    if serving:
        return "unable"
    return "loading" if younger else "none"


def verdict(ok: bool, old: bool, was: int, failing_since: float | None, now: float, patience: float
            ) -> tuple[int, float | None]:
    """A worker's row after a readiness check that passed (OK) or failed at NOW: ABLE or UNABLE, and since when its
    checks have failed (None while they pass). A worker of the reload is unable at its first failure (it would answer
    503); an OLD one only once they have failed for PATIENCE seconds (one slow probe must not end its handover to
    workers that cannot score at all), keeping what its row said (WAS) until then."""
    if ok:
        return ABLE, None
    since = now if failing_since is None else failing_since
    return (UNABLE if not old or now - since >= patience else was), since


def able_elder(role: int) -> bool:
    """Whether a worker of the generation before the last reload serves ROLE and can score, or has not checked yet (it
    checks within FITNESS_S of a reload): while one does, a worker of the reload that cannot score takes no
    connections (it would answer them 503)."""
    mark = RELOADED[0]
    return any(0 < BORN[row] <= mark and SERVES[row] == role and FIT[row] != UNABLE for row in range(SLOTS))


def fair_limit(counts: Sequence[int], own: int) -> int | None:
    """How many connections the worker in row OWN may hold, given every row's COUNTS (connections + 1, 0 for
    no worker): two more than the least loaded other live worker published, or None (no limit) when it is alone.

    Two, not one: a row is published before the loop's wait, in which the worker may accept one more, so a row can
    lag its worker by one. With one, two workers holding as many each stopped accepting, each behind the other's
    lagging row, until their one-second waits ran out: silent connections, which make no events, held every new
    connection back a third of a second each (40 of them, ten seconds)."""
    rows = list(counts)  # a snapshot; this runs on the worker's main loop before every wait
    rows[own] = 0
    others = list(filter(None, rows))  # rows of live workers hold their connections + 1
    return min(others) + 1 if others else None
