"""Running workers follow the registry's `production` alias: a promotion, a rollback or a new policy revision
is picked up within seconds, without a restart.

Each worker checks the alias (a small JSON file) and the production model's latest policy file every
`interval` seconds (1 by default: a promotion on one instance reaches every instance sharing the registry
well within 5 s) on a background thread. When either moved, it loads the new model (checksum and
feature list checked, as at start-up), warms it and swaps model and policy in one assignment: a
request in flight finishes with the pair it started with, and the evidence of every assessment
names the versions that made it. A model that fails to load is logged once and the current one
keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fraud_service.scoring.model import Scorer
from fraud_service.scoring.policy import Policy
from fraud_service.scoring.service import Assessor, Loaded
from models.registry import ModelRegistry

log = logging.getLogger(__name__)


class ProductionWatch:
    """Keeps ASSESSOR on the registry's production model and its latest policy."""

    def __init__(self, assessor: Assessor, registry: ModelRegistry, interval: float = 1.0,
                 on_swap: Callable[[Loaded, Loaded], Any] | None = None) -> None:
        self.assessor = assessor
        self.registry = registry
        self.interval = interval
        self.on_swap = on_swap
        self.key = self._key_of(assessor.scorer.version)  # what is served (the alias may name a model that failed)
        self._failed: tuple[tuple[str, str], Any] | None = None  # the key that failed, and its files' stamp then
        self._served = registry.stamp(self.key[0])  # the served version's files when last checked
        self._damage: str | None = None  # what that check found wrong with them
        self.problem: str | None = None  # why the production alias is not what is served (for /readyz)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self) -> tuple[str, str]:
        return self._key_of(self.registry.resolve("production"))

    def _key_of(self, version: str) -> tuple[str, str]:
        policies = sorted((self.registry.root / "versions" / version).glob("policy-*.json"))
        return version, policies[-1].name if policies else ""

    def check(self) -> bool:
        """Swap in the production model if it changed since the last check; whether it swapped."""
        with self._lock:
            try:
                key = self._key()
            except Exception as exc:  # any damage to the registry: keep serving what is loaded
                problem = f"cannot read the production alias: {exc}; still serving {self.assessor.scorer.version}"
                if problem != self.problem:  # logged once, not every second while it lasts
                    log.error("%s", problem)
                self.problem = problem
                return False
            if key == self.key:
                self.problem = self._served_damage()  # the alias names what is served: are its files still whole?
                return False
            stamp = self.registry.stamp(key[0])  # before loading: a change while it loads is tried next time
            if self._failed == (key, stamp):
                return False  # tried, and nothing changed since: mended files or a new promotion are tried again
            try:
                scorer = Scorer.from_registry(self.registry, key[0])
                policy = Policy.from_dict(scorer.policy)
                x = scorer.row({})  # warm: the first real request is not the slow one
                scorer.probability(x)
                scorer.contributions(x)
            except Exception as exc:  # whatever a damaged model raises, the last good one keeps serving
                self._failed = (key, stamp)
                self.problem = (f"production is now {key[0]}, but it cannot be loaded ({type(exc).__name__}: {exc}); "
                                f"still serving {self.assessor.scorer.version}")
                log.error("%s", self.problem)
                return False
            before = self.assessor.loaded
            self.assessor.loaded = Loaded.of(scorer, policy)
            self.key, self._failed, self.problem, self._served, self._damage = key, None, None, stamp, None
            log.info("now serving model %s with policy %s (was %s, %s)", scorer.version, policy.version,
                     before.scorer.version, before.policy.version)
            if self.on_swap is not None:
                self.on_swap(before, self.assessor.loaded)
            return True

    def _served_damage(self) -> str | None:
        """Why the served version's files no longer load (changed on disk since they were last found whole), or None.
        The loaded copy keeps serving, but a worker started now (a respawn, a restart) could not load it: a truncated
        model.txt left /readyz green while respawned workers had no model (a helper's probe). Checked again only when
        the files' stamp moves: the seal is read, and every file hashed, once per change."""
        stamp = self.registry.stamp(self.key[0])
        if stamp == self._served:
            return self._damage
        self._served = stamp
        try:
            self.registry.load(self.key[0])
        except Exception as exc:  # whatever the damage: said, not raised
            problem = (f"the files of {self.key[0]}, the model served, changed on disk and no longer load ({exc}); "
                       "it keeps serving here, but a worker started now could not load it: restore its files, or "
                       "promote or roll back to another version")
            if problem != self._damage:
                log.error("%s", problem)
            self._damage = problem
            return problem
        self._damage = None
        return None

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.check()
                except Exception:  # the watcher outlives anything a check raises
                    log.exception("checking the production model failed; still serving %s",
                                  self.assessor.scorer.version)

        self._thread = threading.Thread(target=run, name="production-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
