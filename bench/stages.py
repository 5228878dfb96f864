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
