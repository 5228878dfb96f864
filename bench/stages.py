"""Shared plumbing of the benchmarks: each stage runs in a child process so its peak RSS is its own."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def peak_mb() -> float:
    """This process's peak resident set size, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TreePeak:
    """The peak resident set of this process and all its descendants (a Spark driver's JVM is a child of the
    Python process, which `peak_mb` does not see), sampled from /proc every INTERVAL seconds on a thread."""

    def __init__(self, interval: float = 0.5) -> None:
        import os
        import threading

        self.peak_mb = 0.0
        self._root = os.getpid()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, peak_mb())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self._root))


def _tree_rss_mb(root: int) -> float:
    """Current RSS of ROOT and its descendants, in MB (from /proc/PID/stat: ppid and rss pages)."""
    import os
    from pathlib import Path

    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        rss[int(entry.name)] = int(fields[21])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in tree) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_stage(script: str, stage: str, args: list[str]) -> dict:
    """Run `python SCRIPT --stage STAGE ARGS...` and return the JSON it prints last."""
    done = subprocess.run([sys.executable, script, "--stage", stage, *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def world_parser(description: str, stages: dict) -> argparse.ArgumentParser:
    """The options both benchmarks share: the world's size and shape, and the stage plumbing."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--orders-per-year", type=float, default=22.0)
    parser.add_argument("--return-rate", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stage", choices=sorted(stages), help="run one stage in this process (internal)")
    parser.add_argument("--dir", help="working directory of a stage (internal)")
    parser.add_argument("--home", help="FRAUD_HOME of a stage (internal)")
    return parser


def world_argv(args: argparse.Namespace, tmp: str) -> list[str]:
    """The shared options, as arguments for a stage process working under TMP."""
    return ["--customers", str(args.customers), "--days", str(args.days), "--seed", str(args.seed),
            "--orders-per-year", str(args.orders_per_year), "--return-rate", str(args.return_rate),
            "--dir", f"{tmp}/data", "--home", f"{tmp}/home"]
