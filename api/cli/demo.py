"""The demo command: the data, features, model, cases and users `make run` starts the service with."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.cli.common import Subparsers, add_command, progress, world_options
from fraud_service.config import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a small demo world (unless already there), ingest it, build features, train, fill the queue."""
    from training import demo
    from training.datasets.synthetic import WorldConfig

    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed)
    demo.run(settings, config, Path(args.out), progress(args), say=print)
    return 0


def register(sub: Subparsers) -> None:
    """The demo command."""
    p = add_command(sub, "demo", cmd_demo,
                    "generate a demo world, ingest it, build features, train (what `make run` does first)",
                    "Generate a small synthetic world into --out (skipped when it is already there with the\n"
                    "same settings), ingest it into the warehouse, build the feature store from it (skipped\n"
                    "when already built from the same snapshot), materialise the online store, train and\n"
                    "register a first model on all but the last 45 days (skipped when the production model\n"
                    "was trained on the same data), assess the latest returns so the analysts' queue has\n"
                    "cases, and create an analyst and an admin user for the UI (passwords in\n"
                    "$FRAUD_HOME/demo-users.txt).")
    p.add_argument("--out", required=True, metavar="DIR")
    world_options(p, customers=5000, days=270)
