"""The evidence log's commands, for whoever answers for it: verify the chain (and a bundle, and checkpoints), and
sign checkpoints to ship off the machine."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from api.cli.common import EXIT_REJECTED, Subparsers
from fraud_service.config import Settings
from fraud_service.errors import BadRequest


def cmd_evidence_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the whole evidence hash chain; exit 1 and name the first broken event if it is not intact."""
    from fraud_service.bootstrap import evidence
    from fraud_service.health import verify_checkpoints, verify_log

    _check_options(args)
    if args.bundle:
        return _verify_bundle(Path(args.bundle))
    public_key = Path(args.public_key) if args.public_key else settings.checkpoint_key.with_name(
        settings.checkpoint_key.name + ".pub")
    with evidence(settings, read_only=True) as db:  # an auditor's read-only copy is verified where it lies
        result, derived = verify_log(db.uow())
        anchored = verify_checkpoints(db.uow(), Path(args.checkpoints), public_key) if args.checkpoints else None
    failed = False
    if not result.ok:
        where = f" at event {result.broken_at}" if result.broken_at is not None else ""
        print(f"evidence chain BROKEN{where}: {result.problem} ({result.events:,} events verified before it)")
        failed = True
    else:
        print(f"evidence chain intact: {result.events:,} events on {result.chains:,} chain(s) (the root and each "
              f"evidence writer's segment), root head {result.head_hash}")
        assert derived is not None
        counted = ", ".join(f"{n:,} {table}" for table, n in derived.rows.items())
        if derived.ok:
            print(f"derived tables agree with their events: {counted}")
        else:
            print(f"derived tables DIFFER from the evidence: {derived.problem} (checked {counted})")
            failed = True
    if anchored is not None:
        if anchored.ok:
            latest = anchored.latest
            print(f"checkpoints agree: {anchored.checked} signed checkpoint(s), the stored events at their positions "
                  "still have their hashes"
                  + (f" (the latest: event {latest.seq}, taken {latest.at})" if latest else ""))
        else:
            print(f"checkpoints DISAGREE ({len(anchored.problems)} of {anchored.checked}):")
            for problem in anchored.problems:
                print(f"  - {problem}")
            failed = True
    return EXIT_REJECTED if failed else 0


def _check_options(args: argparse.Namespace) -> None:
    """BadRequest for options `verify` would otherwise ignore: a key with no checkpoints to check it against, and
    database checks beside a bundle, which is checked offline alone."""
    if args.bundle and (args.checkpoints or args.public_key):
        given = " and ".join(name for name, value in (("--checkpoints", args.checkpoints),
                                                       ("--public-key", args.public_key)) if value)
        raise BadRequest(f"--bundle is checked offline, on its own; {given} are for checking the evidence "
                         "database: run `fraud-service evidence verify --checkpoints DIR [--public-key FILE]` "
                         "separately")
    if args.public_key and not args.checkpoints:
        raise BadRequest(f"--public-key {args.public_key} checks the signatures of checkpoints: give the "
                         "checkpoints too (--checkpoints DIR, or one file); without them no signature is checked")


def cmd_evidence_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    """Sign the chain head and write it where the database's writers cannot reach."""
    from fraud_service.bootstrap import evidence
    from fraud_service.health import write_checkpoint

    key = Path(args.key) if args.key else settings.checkpoint_key
    out = Path(args.out)
    if args.out.endswith(("/", os.sep)):  # a directory, made if need be (a schedule's first run made a file)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadRequest(f"--out {args.out}: the directory cannot be made ({exc.strerror or exc})") from None
    elif not out.parent.is_dir():
        raise BadRequest(f"--out {args.out}: the folder {out.parent} does not exist (end --out with / to make it a "
                         "directory checkpoints are added to)")
    with evidence(settings) as db:
        path, taken, made = write_checkpoint(db.uow(), key, out, dt.datetime.now(dt.UTC))
    if made:
        print(f"made the checkpoint signing key {key} (owner-only) and its public half {key}.pub: keep the key "
              "away from the database's writers and give verifiers the .pub", file=sys.stderr)
    print(f"checkpoint of event {taken.seq} ({taken.hash}) written to {path}")
    return 0


def _verify_bundle(path: Path) -> int:
    """Check an exported evidence bundle offline (no database needed)."""
    from fraud_service.cases import bundle

    data, raw, page = bundle.read(path)
    check = bundle.verify(data, raw, page)
    case = data.get("case")
    case_id = case.get("case_id") if isinstance(case, dict) else None
    if check.ok:
        print(f"bundle of case {case_id} verified: {check.events} evidence event(s) hash to their links, "
              f"{check.links} link(s) run unbroken to the heads of chain(s) "
              + ", ".join(f"{c} (link {h.get('position')}, {h.get('hash')})" for c, h in sorted(check.heads.items()))
              + "; its content matches the events"
              + ("; its HTML page is the one that content renders to" if page is not None else
                 " (a JSON file: no HTML page to check)"))
        print(f"bundle SHA-256 {bundle.digest(raw)} (the log's case_bundle_exported event names it)")
        return 0
    print(f"bundle of case {case_id} does NOT verify:")
    for problem in check.problems:
        print(f"  - {problem}")
    return EXIT_REJECTED


def register(sub: Subparsers) -> None:
    evidence = sub.add_parser("evidence", help="verify the evidence log; sign checkpoints of it",
                              description="The append-only evidence log, each event chained to the previous by hash.")
    esub = evidence.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    verify_help = ("re-hash the whole chain and check the assessments, notes and labels against their events (or "
                   "check a case's exported bundle offline); exit 1 naming the first edited, inserted or missing "
                   "event or row")
    q = esub.add_parser("verify", help=verify_help, description=verify_help[0].upper() + verify_help[1:] + ".")
    q.add_argument("--bundle", metavar="FILE", help="an evidence bundle (the .zip from the UI or "
                                                   "/v1/cases/ID/bundle, or its .json): checked without the database")
    q.add_argument("--checkpoints", metavar="DIR", help="also check the signed checkpoints in DIR (or one file): "
                                                        "each must match the stored chain, else it was rewritten")
    q.add_argument("--public-key", metavar="FILE", help="with --checkpoints: the checkpoint key's public half "
                                                        "(default: $FRAUD_CHECKPOINT_KEY.pub)")
    q.set_defaults(func=cmd_evidence_verify, home=lambda args, _: None if args.bundle else "database")
    c = esub.add_parser("checkpoint", help="sign the chain head (sequence, hash, time) and write it to a file or "
                                           "directory: ship it off the machine, and `verify --checkpoints` finds "
                                           "a rewritten chain",
                        description="Signs the chain head with an Ed25519 key kept outside the database\n"
                                    "(FRAUD_CHECKPOINT_KEY, default $FRAUD_HOME/checkpoint-key.pem; made at the\n"
                                    "first checkpoint, with its public half beside it as .pub). Run it on a\n"
                                    "schedule and copy each file somewhere the database's writers cannot\n"
                                    "change (docs/security.md).",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", required=True, metavar="PATH",
                   help="a new file to write, or a directory to add a file to (an existing file is never replaced; "
                        "a path ending in / is a directory, made if missing)")
    c.add_argument("--key", metavar="FILE", help="the signing key (default $FRAUD_CHECKPOINT_KEY)")
    c.set_defaults(func=cmd_evidence_checkpoint,  # the signing key is in FRAUD_HOME unless named elsewhere
                   home=lambda args, settings: "database" if args.key or settings.checkpoint_key_path else "reads")
