"""Progress lines for long work, written to stderr so that stdout stays machine-readable."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints one line per step with its duration; silent when disabled."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, prefix: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.prefix = prefix
        self._started = time.perf_counter()

    def info(self, message: str) -> None:
        """Print one line."""
        if self.enabled:
            elapsed = time.perf_counter() - self._started
            print(f"{self.prefix}[{elapsed:7.1f}s] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Announce a step, run it, and report how long it took."""
        self.info(f"{message} ...")
        t0 = time.perf_counter()
        yield
        self.info(f"{message}: done in {time.perf_counter() - t0:.1f}s")


SILENT = Progress(enabled=False)
