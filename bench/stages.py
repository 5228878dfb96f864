"""Shared plumbing of the benchmarks: each stage runs in a child process so its peak RSS is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_mb() -> float:
    """This process's peak resident set size, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(script: str, stage: str, args: list[str]) -> dict:
    """Run `python SCRIPT --stage STAGE ARGS...` and return the JSON it prints last."""
    done = subprocess.run([sys.executable, script, "--stage", stage, *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
