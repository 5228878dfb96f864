"""`fraud-service webhooks`: who hears about outcomes and closed cases, what was delivered, what to send again."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from api.cli.common import Subparsers, cli_actor, number_in, positive_int_at_most
from fraud_service.config import Settings

DESCRIPTION = """\
Webhooks tell the returns system what happened after its first answer:
  assessment.outcome  an assessment's outcome changed (a case closed, an inspection, an appeal)
  case.closed         an analyst closed a case (its returns, labels and final decisions)
Each delivery is a JSON POST signed with the webhook's secret:
  Fraud-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
It is retried with back-off for 24 hours (FRAUD_WEBHOOK_RETRY_HOURS), then marked dead; `replay`
sends it again. `serve` sends deliveries itself (FRAUD_WEBHOOK_DISPATCH=true); `run` is the same
sender as a process of its own. Addresses must be public unless FRAUD_WEBHOOK_ALLOW_PRIVATE=true.
"""


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add a webhook and print its secret (once)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.feedback import webhooks

    with evidence(settings) as db:
        hook, secret = webhooks.add(db.uow(), url=args.url, events=args.events, actor=cli_actor(),
                                    allow_private=settings.webhook_allow_private)
    print(f"{hook.id} {hook.url} {','.join(hook.events)}")
    print(secret)
    print("the secret above signs every delivery; it is shown only now: give it to the receiver", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """The webhooks in use, with their pending and dead deliveries."""
    from fraud_service.bootstrap import evidence
    from fraud_service.feedback import webhooks

    with evidence(settings) as db:
        hooks = webhooks.listing(db.uow())
    if not hooks:
        print("no webhooks: add one with `fraud-service webhooks add URL`")
        return 0
    print(f"{'id':<22} {'pending':>7} {'dead':>5} {'events':<32} url")
    for h in hooks:
        print(f"{h.id:<22} {h.pending:>7} {h.dead:>5} {','.join(h.events):<32} {h.url}")
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_service.bootstrap import evidence
    from fraud_service.feedback import webhooks

    with evidence(settings) as db:
        webhooks.remove(db.uow(), webhook_id=args.webhook_id, actor=cli_actor())
    print(f"webhook {args.webhook_id} removed; nothing more is sent to it")
    return 0


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_service.bootstrap import evidence
    from fraud_service.feedback import webhooks

    with evidence(settings) as db:
        found = webhooks.deliveries(db.uow(), webhook_id=args.webhook_id, status=args.status, limit=args.limit)
    if not found:
        print("no deliveries" + (f" that are {args.status}" if args.status else ""))
        return 0
    print(f"{'event':<36} {'type':<19} {'status':<9} {'tries':>5} {'last':>4}  detail")
    for d in found:
        detail = d.last_error or (f"delivered {d.delivered_at[:19]}" if d.delivered_at else
                                  f"next attempt {(d.next_attempt_at or '')[:19]}")
        print(f"{d.event_id:<36} {d.type:<19} {d.status:<9} {d.attempts:>5} {d.last_status or '-':>4}  {detail}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from fraud_service.bootstrap import evidence
    from fraud_service.feedback import webhooks

    with evidence(settings) as db:
        queued = webhooks.replay(db.uow(), event_id=args.event_id, actor=cli_actor(), webhook_id=args.webhook,
                                 retry_hours=settings.webhook_retry_hours)
    print(f"event {args.event_id}: {queued} delivery(ies) pending again"
          + ("" if queued else " (no webhook in use takes it)"))
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Send pending deliveries until interrupted (Ctrl-C or SIGTERM)."""
    from fraud_service.bootstrap import dispatcher, evidence

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with evidence(settings) as db:
        sent = {"ok": 0, "failed": 0}

        def report(claim: object, attempt: object) -> None:
            sent["ok" if getattr(attempt, "ok", False) else "failed"] += 1

        sender = dispatcher(settings, db.uow)
        sender.on_result = report
        sender.start()
        print(f"sending webhook deliveries from {db.where}; Ctrl-C stops", file=sys.stderr)
        while not stop.wait(args.report_every):
            print(f"delivered {sent['ok']}, failed attempts {sent['failed']}", file=sys.stderr)
        sender.close()
    print(f"stopped: delivered {sent['ok']}, failed attempts {sent['failed']}", file=sys.stderr)
    return 0


def register(sub: Subparsers) -> None:
    from fraud_service.feedback.webhooks import EVENT_TYPES

    hooks = sub.add_parser("webhooks", help="webhooks to the returns system: add, list, remove, deliveries, "
                                            "replay, run", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    hooks.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    wsub = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    q = wsub.add_parser("add", help="add a webhook; prints its id and its secret (once)")
    q.add_argument("url", metavar="URL", help="where to POST events (http or https)")
    q.add_argument("--events", nargs="+", choices=EVENT_TYPES, default=list(EVENT_TYPES),
                   help="the event types it takes (default: all)")
    q.set_defaults(func=cmd_add)
    wsub.add_parser("list", help="the webhooks in use, with pending and dead deliveries").set_defaults(func=cmd_list)
    q = wsub.add_parser("remove", help="stop sending to a webhook")
    q.add_argument("webhook_id", metavar="ID", help="the webhook's id, as `webhooks list` shows it")
    q.set_defaults(func=cmd_remove)
    q = wsub.add_parser("deliveries", help="a webhook's deliveries, newest first")
    q.add_argument("webhook_id", metavar="ID", help="the webhook's id, as `webhooks list` shows it")
    q.add_argument("--status", choices=("pending", "delivered", "dead"), help="only these")
    q.add_argument("--limit", type=positive_int_at_most(1000), default=50,
                   help="at most this many (1 to 1000, default 50)")
    q.set_defaults(func=cmd_deliveries)
    q = wsub.add_parser("replay", help="send an event again, with a new retry window")
    q.add_argument("event_id", metavar="EVENT_ID", help="evt_... (from `deliveries` or the receiver's log)")
    q.add_argument("--webhook", metavar="ID", help="to this webhook only (default: every one it went to or that "
                                                   "takes its type)")
    q.set_defaults(func=cmd_replay)
    q = wsub.add_parser("run", help="send pending deliveries until stopped (when serve's own sender is off)")
    q.add_argument("--report-every", type=number_in(0.1, 86_400), default=60.0, metavar="SECONDS",
                   help="print counts this often (default 60)")
    q.set_defaults(func=cmd_run)
