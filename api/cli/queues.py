"""Named queues from the command line, for admins: `fraud-service queues list|set|remove|sweep` (the same core
services as /v1/queues and /ui/queues; each change an evidence event)."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from api.cli.common import Subparsers, cli_actor, number_in, positive_int_at_most
from fraud_service.config import Settings


def cmd_queues_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every named queue with its filter, SLA, cap, members and what it holds now."""
    from fraud_service.bootstrap import evidence
    from fraud_service.cases import queues

    with evidence(settings) as db:
        found = queues.listing(db.uow())
    if args.json:
        print(json.dumps([q.to_dict() for q in found], indent=2))
        return 0
    if not found:
        print("no named queues: make one with `fraud-service queues set NAME --sla-hours H --cap N`")
        return 0
    for q in found:
        print(f"{q.name}: {q.cases} case(s), {q.unassigned} unassigned, {q.breaches} past the SLA of "
              f"{q.sla_hours:g} h; cap {q.cap}; members {', '.join(q.members) or 'none'}; "
              f"filter {json.dumps(q.filter)}")
    return 0


def cmd_queues_set(args: argparse.Namespace, settings: Settings) -> int:
    """Create or change a named queue (an evidence event)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.cases import queues

    rule: dict[str, object] = {}
    if args.status:
        rule["statuses"] = args.status
    for name in ("decision", "reason", "return_type", "min_amount"):
        if getattr(args, name) is not None:
            rule[name] = getattr(args, name)
    if args.appealed is not None:
        rule["appealed"] = args.appealed == "yes"
    body = {"filter": rule, "sla_hours": args.sla_hours, "cap": args.cap, "members": args.member or []}
    with evidence(settings) as db:
        saved = queues.put(db.uow(), name=args.name, body=body, actor=cli_actor())
    print(f"queue {saved.name} saved: {saved.cases} case(s) in it now; members {', '.join(saved.members) or 'none'}")
    return 0


def cmd_queues_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a named queue (its cases stay as they are; an evidence event)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.cases import queues

    with evidence(settings) as db:
        queues.remove(db.uow(), name=args.name, actor=cli_actor())
    print(f"queue {args.name} removed")
    return 0


def cmd_queues_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Run the assigner once now (what every `serve` worker does every FRAUD_ASSIGN_INTERVAL_S seconds)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.cases import assigner

    with evidence(settings) as db:
        done = assigner.sweep(db.uow, now=dt.datetime.now(dt.UTC),
                              active_within=dt.timedelta(minutes=settings.assign_active_minutes),
                              inactive_after=dt.timedelta(minutes=settings.assign_inactive_minutes))
    for a in done:
        print(f"{a.queue}: {a.case_id} {a.previous or 'nobody'} -> {a.assignee or 'nobody'} ({a.why})")
    print(f"{len(done)} change(s)")
    return 0


def register(sub: Subparsers) -> None:
    """The queues commands."""
    from fraud_service.data.contract import RETURN_TYPES

    p = sub.add_parser("queues", help="named queues: list, set, remove, sweep (assign now)",
                       description="Named queues: the cases a filter selects, with an SLA, a per-person cap and "
                                   "member analysts the assigner hands them to in turn.")
    p.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    qsub = p.add_subparsers(dest="queues_command", metavar="ACTION", required=True)
    q = qsub.add_parser("list", help="every queue with what it holds now")
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(func=cmd_queues_list)
    q = qsub.add_parser("set", help="create or change a queue (the whole definition)")
    q.add_argument("name", help="the queue's name")
    q.add_argument("--sla-hours", type=number_in(0.01, 8760), required=True,
                   help="cases older than this are breaches (0.01 to 8760)")
    q.add_argument("--cap", type=positive_int_at_most(100_000), required=True,
                   help="most cases not closed a member may hold")
    q.add_argument("--member", action="append", metavar="USER", help="a member (repeat for more)")
    q.add_argument("--status", action="append", choices=("open", "in_review", "escalated"),
                   help="a status the queue holds (repeat; default: every status but closed)")
    q.add_argument("--decision", choices=("review", "deny"),
                   help="only cases of assessments with this decision")
    q.add_argument("--reason", help="the return reason the cases were opened with (as the returns system sends "
                                    "it: size, damaged, ...)")
    q.add_argument("--min-amount", type=number_in(0, 1e9), help="refunds at stake at least")
    q.add_argument("--return-type", choices=RETURN_TYPES,
                   help="cases with an assessment of this return type")
    q.add_argument("--appealed", choices=("yes", "no"), help="appealed cases only, or none of them")
    q.set_defaults(func=cmd_queues_set)
    q = qsub.add_parser("remove", help="remove a queue")
    q.add_argument("name", help="the queue's name")
    q.set_defaults(func=cmd_queues_remove)
    qsub.add_parser("sweep", help="assign now (as the serve workers do in the background)").set_defaults(
        func=cmd_queues_sweep)
