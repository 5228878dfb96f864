"""`fraud-service returns`: what the returns system can do over HTTP, for an operator at a terminal: read an
assessment's outcome, report an inspection, relay an appeal (the same core services as the API)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from api.cli.common import Subparsers, cli_actor
from fraud_service.config import Settings
from fraud_service.data.contract import utc_instant
from fraud_service.errors import TimeOutOfRange


def _instant(text: str) -> dt.datetime:
    """argparse type: an ISO 8601 time (naive = UTC)."""
    try:
        return utc_instant(text)
    except TimeOutOfRange as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-12-02T10:30:00Z") from None


def cmd_outcome(args: argparse.Namespace, settings: Settings) -> int:
    """Print an assessment's outcome in force (JSON)."""
    from fraud_service.bootstrap import evidence, feedback
    from fraud_service.feedback import outcomes

    with evidence(settings) as db:
        found = outcomes.read(db.uow(), assessment_id=args.assessment_id, messages=feedback(settings).messages)
    print(json.dumps({"assessment_id": args.assessment_id, "return_id": found["response"]["return_id"],
                      "outcome": found["outcome"]}, indent=2))
    return 0


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    """Report a warehouse inspection, as POST /v1/returns/ID/inspection does (live features included)."""
    from fraud_service.bootstrap import evidence, feedback, live_inspections
    from fraud_service.feedback import inspections

    with evidence(settings) as db:
        done = inspections.record(db.uow(), return_id=args.return_id, inspected_at=args.at or dt.datetime.now(dt.UTC),
                                  outcome=args.outcome, notes=args.notes, actor=cli_actor(),
                                  feedback=feedback(settings), live=live_inspections(settings))
    if done.replayed:
        print("this inspection was reported before: nothing changed", file=sys.stderr)
    print(json.dumps(done.to_dict(), indent=2))
    return 0


def cmd_appeal(args: argparse.Namespace, settings: Settings) -> int:
    """Relay a shopper's appeal, as POST /v1/assessments/ID/appeal does."""
    from fraud_service.bootstrap import evidence, feedback
    from fraud_service.feedback import appeals

    with evidence(settings) as db:
        done = appeals.appeal(db.uow(), assessment_id=args.assessment_id, message=args.message, actor=cli_actor(),
                              feedback=feedback(settings))
    print(json.dumps(done.to_dict(), indent=2))
    return 0


def register(sub: Subparsers) -> None:
    from fraud_service.data.contract import INSPECTION_OUTCOMES

    returns = sub.add_parser("returns", help="an assessment's outcome; report an inspection; relay an appeal",
                             description="What the returns system does over HTTP (docs/feedback.md), from a "
                                         "terminal:\noutcomes, inspections and appeals. Changes are evidence "
                                         "events and reach the webhooks.",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    returns.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    rsub = returns.add_subparsers(dest="returns_command", metavar="ACTION", required=True)
    q = rsub.add_parser("outcome", help="the outcome in force of an assessment (JSON)")
    q.add_argument("assessment_id", metavar="ASSESSMENT_ID", help="the asm_... id the assessment answered with")
    q.set_defaults(func=cmd_outcome)
    q = rsub.add_parser("inspect", help="report the warehouse's inspection of an assessed return")
    q.add_argument("return_id", metavar="RETURN_ID", help="the assessed return's id")
    q.add_argument("outcome", choices=INSPECTION_OUTCOMES, help="what the warehouse found")
    q.add_argument("--at", type=_instant, help="when the goods were checked (ISO 8601; default now)")
    q.add_argument("--notes", default="", help="what the inspector saw (kept with the inspection)")
    q.set_defaults(func=cmd_inspect)
    q = rsub.add_parser("appeal", help="relay a shopper's appeal: the case goes to the top of the queue")
    q.add_argument("assessment_id", metavar="ASSESSMENT_ID", help="the asm_... id of the appealed assessment")
    q.add_argument("--message", required=True, help="the shopper's words")
    q.set_defaults(func=cmd_appeal)
