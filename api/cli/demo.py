"""The demo command: the data, features, model, cases and users `make run` starts the service with."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.cli.common import Subparsers, add_command, progress, share, world_config, world_options
from fraud_service.config import Settings

DEMO_FRAUD_SHARE = 0.01


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a small demo world (unless already there), ingest it, build features, train, fill the queue."""
    from training import demo

    demo.run(settings, world_config(args, fraud_share=args.fraud_share), Path(args.out), progress(args), say=print)
    return 0


def register(sub: Subparsers) -> None:
    """The demo command."""
    p = add_command(sub, "demo", cmd_demo,
                    "generate a demo world, ingest it, build features, train (what `make run` does first)",
                    "Generate a synthetic world that ends now into --out (kept when it is already there with the\n"
                    "same settings and ended less than a day ago, or is already ingested; a world of other\n"
                    "settings is refused once one is ingested, as the two would mix), hold its latest returns out\n"
                    "(up to 300, at most a fifth) and ingest the rest into the warehouse, build the feature store\n"
                    "from it (skipped when already built from the same snapshot), materialise the online store,\n"
                    "train a model on what was known before the last 30 days with mature labels and test it on\n"
                    "them (skipped when the production model was trained on the same data; a retrain identical to\n"
                    "a registered model reuses it), which becomes production if it beats the rules+history\n"
                    "baseline out of time; then assess the held-out returns through the scoring service as live\n"
                    "traffic so the analysts' queue has cases, and create an analyst and an admin user for the UI\n"
                    "(passwords in $FRAUD_HOME/demo-users.txt).")
    p.add_argument("--out", required=True, metavar="DIR", help="where the world's tables are written (or kept)")
    p.set_defaults(home="makes")  # `make run`'s first step sets up var/
    world_options(p, customers=12000, days=270)
    p.add_argument("--fraud-share", type=share, default=DEMO_FRAUD_SHARE, metavar="SHARE",
                   help="share of customers who are fraudsters or abusers (default 1%%: about one return in eleven "
                        "is bad, in line with what retailers report)")
