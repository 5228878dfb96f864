"""Administration commands, for whoever runs the service: serve, db, keys, users, lists, evidence, labels."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from api.cli.common import EXIT_REJECTED, Subparsers, add_command, cli_actor, positive_int, progress, when
from fraud_service.config import Settings


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Create or migrate the evidence database schema to the newest revision."""
    from fraud_service.bootstrap import evidence

    with evidence(settings, migrated=False) as db:
        before, head = db.upgrade()
        where = db.where
    if before == head:
        print(f"evidence database {where} is already at schema {head}")
    else:
        print(f"evidence database {where} upgraded from {before or 'empty'} to schema {head}")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create an API key; the key is printed once and only its hash is kept."""
    from fraud_service.access.keys import create_key
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        key = create_key(db.uow(), args.role, args.name or f"{args.role} key", cli_actor())
    print(key)
    print(f"created a {args.role} key; it is shown only now: store it, send it as `Authorization: Bearer KEY`",
          file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List API keys (ids, roles, names; never the secrets)."""
    from fraud_service.access.keys import list_keys
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        keys = list_keys(db.uow())
    if not keys:
        print("no API keys: create one with `fraud-service keys create --role ROLE`")
        return 0
    print(f"{'id':<14} {'role':<8} {'created':<26} {'revoked':<26} name")
    for k in keys:
        print(f"{k.id:<14} {k.role:<8} {when(k.created_at):<26} {when(k.revoked_at):<26} {k.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke an API key by its id (running workers stop accepting it within 30 s)."""
    from fraud_service.access.keys import revoke_key
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        revoke_key(db.uow(), args.key_id, cli_actor())
    print(f"key {args.key_id} revoked (running workers honour it within 30 seconds)")
    return 0


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a person's account for the analyst UI; the password is generated and printed unless given on stdin."""
    from fraud_service.access.users import create_user
    from fraud_service.bootstrap import evidence

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    with evidence(settings) as db:
        password = create_user(db.uow(), args.name, args.role, password, cli_actor())
    if not args.password_stdin:
        print(password)
        print(f"created {args.role} {args.name}; the password above is shown only now", file=sys.stderr)
    else:
        print(f"created {args.role} {args.name}", file=sys.stderr)
    return 0


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    """List UI users."""
    from fraud_service.access.users import list_users
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        users = list_users(db.uow())
    if not users:
        print("no users: create one with `fraud-service users create NAME --role analyst`")
        return 0
    print(f"{'name':<24} {'role':<8} {'created':<20} disabled")
    for u in users:
        print(f"{u.name:<24} {u.role:<8} {when(u.created_at):<20} {when(u.disabled_at)}")
    return 0


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    """Disable a user (signed-in sessions end at their next request)."""
    from fraud_service.access.users import disable_user
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        disable_user(db.uow(), args.name, cli_actor())
    print(f"user {args.name} disabled")
    return 0


def cmd_lists_add(args: argparse.Namespace, settings: Settings) -> int:
    """Put a token on the allow or block list (an evidence event; running workers see it within a second)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import lists

    with evidence(settings) as db:
        entry = lists.add(db.uow(), entity=args.entity, value=args.value, list_name=args.list, reason=args.reason,
                          actor=cli_actor())
    print(f"{entry.entity} {entry.value} is on the {entry.list} list ({entry.reason}); running workers apply it "
          "within a second")
    return 0


def cmd_lists_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Take a token off its list (an evidence event)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import lists

    with evidence(settings) as db:
        entry = lists.remove(db.uow(), entity=args.entity, value=args.value, actor=cli_actor())
    print(f"{entry.entity} {entry.value} is off the {entry.list} list")
    return 0


def cmd_lists_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every allow and block list entry."""
    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import lists

    with evidence(settings) as db:
        entries = lists.entries(db.uow())
    if not entries:
        print("the allow and block lists are empty: add with `fraud-service lists add ENTITY VALUE --list block "
              "--reason WHY`")
        return 0
    print(f"{'entity':<9} {'list':<6} {'added':<20} {'by':<20} {'value':<30} reason")
    for e in entries:
        print(f"{e.entity:<9} {e.list:<6} {e.added_at[:19]:<20} {e.added_by:<20} {e.value:<30} {e.reason}")
    return 0


def cmd_evidence_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the whole evidence hash chain; exit 1 and name the first broken event if it is not intact."""
    from fraud_service.bootstrap import evidence
    from fraud_service.health import verify_checkpoints, verify_derived, verify_evidence

    if args.bundle:
        return _verify_bundle(Path(args.bundle))
    public_key = Path(args.public_key) if args.public_key else settings.checkpoint_key.with_name(
        settings.checkpoint_key.name + ".pub")
    with evidence(settings) as db:
        result = verify_evidence(db.uow())
        derived = verify_derived(db.uow()) if result.ok else None
        anchored = verify_checkpoints(db.uow(), Path(args.checkpoints), public_key) if args.checkpoints else None
    failed = False
    if not result.ok:
        print(f"evidence chain BROKEN at event {result.broken_at}: {result.problem} "
              f"({result.events:,} events verified before it)")
        failed = True
    else:
        print(f"evidence chain intact: {result.events:,} events, head {result.head_hash}")
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
            print(f"checkpoints agree: {anchored.checked} signed checkpoint(s) match the chain"
                  + (f" (the latest: event {latest.seq}, taken {latest.at})" if latest else ""))
        else:
            print(f"checkpoints DISAGREE ({len(anchored.problems)} of {anchored.checked}):")
            for problem in anchored.problems:
                print(f"  - {problem}")
            failed = True
    return EXIT_REJECTED if failed else 0


def cmd_evidence_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    """Sign the chain head and write it where the database's writers cannot reach."""
    from fraud_service.bootstrap import evidence
    from fraud_service.health import write_checkpoint

    key = Path(args.key) if args.key else settings.checkpoint_key
    with evidence(settings) as db:
        path, taken, made = write_checkpoint(db.uow(), key, Path(args.out), dt.datetime.now(dt.UTC))
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
    case_id = data.get("case", {}).get("case_id")
    if check.ok:
        print(f"bundle of case {case_id} verified: {check.events} evidence event(s) hash to their links, "
              f"{check.links} link(s) run unbroken to head event {check.head.get('seq')} "
              f"({check.head.get('hash')}); its content matches the events"
              + ("; its HTML page is the one that content renders to" if page is not None else
                 " (a JSON file: no HTML page to check)"))
        print(f"bundle SHA-256 {bundle.digest(raw)} (the log's case_bundle_exported event names it)")
        return 0
    print(f"bundle of case {case_id} does NOT verify:")
    for problem in check.problems:
        print(f"  - {problem}")
    return EXIT_REJECTED


def cmd_labels_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Copy analysts' labels from the evidence database into the warehouse's labels table."""
    from training.labels import sync_labels

    for line in sync_labels(settings, rebuild_features=False, progress=progress(args)):
        print(line)
    return 0


def _port_free(host: str, port: int, wait: float) -> bool:
    """Whether HOST:PORT can be bound, waiting up to WAIT seconds for it (the workers of a server that was just
    killed may hold it a little longer); says so while it waits."""
    import errno
    import socket
    import time

    deadline, said = time.monotonic() + wait, False
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return True
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    return False
        if not said:
            print(f"{host}:{port} is in use; waiting up to {wait:g} s for it to be free", file=sys.stderr, flush=True)
            said = True
        time.sleep(0.25)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate the evidence database, then run the service under gunicorn on FRAUD_HOST:FRAUD_PORT."""
    import os
    import shutil

    from fraud_service.bootstrap import evidence

    with evidence(settings, migrated=False) as db:
        db.upgrade()
    metrics_dir = settings.home / "metrics"  # api.metrics sums the workers' figures from here
    shutil.rmtree(metrics_dir, ignore_errors=True)  # figures of an earlier run's workers are not this run's
    metrics_dir.mkdir(parents=True)
    # prometheus_client reads PROMETHEUS_MULTIPROC_DIR; Feast, on import, makes its own directory unless
    # PROMETHEUS_MULTIPROCESS_DIR is set: both point at ours
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = str(metrics_dir)
    host = args.host or settings.host
    port = args.port or settings.port
    if not _port_free(host, port, args.port_wait):
        print(f"error: {host}:{port} is still in use after {args.port_wait:g} s; stop what holds it (`ss -ltnp "
              f"'sport = :{port}'`) or serve on another port (--port)", file=sys.stderr)
        return EXIT_REJECTED
    print(f"serving on http://{host}:{port}/ (Ctrl-C stops); analyst UI: http://{host}:{port}/ui/ "
          "(users: fraud-service users create NAME); API keys: fraud-service keys create --role ROLE", flush=True)
    argv = ["gunicorn", "--workers", str(args.workers), "--threads", str(args.threads),
            "--worker-class", "api.gunicorn_worker.BalancedThreadWorker", "--bind", f"{host}:{port}",
            "--config", "python:api.gunicorn_conf",
            "api.app:create_app()"]
    gunicorn = Path(sys.executable).with_name("gunicorn")
    os.execv(str(gunicorn), argv)
    return 0  # pragma: no cover - execv does not return


def register(sub: Subparsers) -> None:
    """The administration commands."""
    p = add_command(sub, "serve", cmd_serve, "run the web service (gunicorn)",
                    "Serve the HTTP API and pages under gunicorn on FRAUD_HOST:FRAUD_PORT.")
    p.add_argument("--host", default=None, help="interface (default FRAUD_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default FRAUD_PORT or 8000)")
    p.add_argument("--workers", type=positive_int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--port-wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the port to be free before giving up (default 30)")
    p.add_argument("--threads", type=positive_int, default=8,
                   help="threads per worker (default 8: a thread holds its connection while its evidence commits; "
                        "8 answered more requests than 4 at 16 connections in the load benchmark)")
    db = sub.add_parser("db", help="the evidence database schema",
                        description="The evidence database (FRAUD_DATABASE_URL, default SQLite in $FRAUD_HOME).")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dsub.add_parser("upgrade", help="create or migrate the schema to the newest revision (Alembic)").set_defaults(
        func=cmd_db_upgrade)
    _keys(sub)
    _lists(sub)
    evidence = sub.add_parser("evidence", help="check the evidence log",
                              description="The append-only evidence log, each event chained to the previous by hash.")
    esub = evidence.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    q = esub.add_parser("verify", help="re-hash the whole chain and check the assessments, notes and labels "
                                       "against their events (or check a case's exported bundle offline); exit 1 "
                                       "naming the first edited, inserted or missing event or row")
    q.add_argument("--bundle", metavar="FILE", help="an evidence bundle (the .zip from the UI or "
                                                   "/v1/cases/ID/bundle, or its .json): checked without the database")
    q.add_argument("--checkpoints", metavar="DIR", help="also check the signed checkpoints in DIR (or one file): "
                                                        "each must match the stored chain, else it was rewritten")
    q.add_argument("--public-key", metavar="FILE", help="the checkpoint key's public half (default: "
                                                        "$FRAUD_CHECKPOINT_KEY.pub)")
    q.set_defaults(func=cmd_evidence_verify)
    c = esub.add_parser("checkpoint", help="sign the chain head (sequence, hash, time) and write it to a file or "
                                           "directory: ship it off the machine, and `verify --checkpoints` finds "
                                           "a rewritten chain",
                        description="Signs the chain head with an Ed25519 key kept outside the database\n"
                                    "(FRAUD_CHECKPOINT_KEY, default $FRAUD_HOME/checkpoint-key.pem; made at the\n"
                                    "first checkpoint, with its public half beside it as .pub). Run it on a\n"
                                    "schedule and copy each file somewhere the database's writers cannot\n"
                                    "change (docs/security.md).",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", required=True, metavar="PATH", help="a file to write, or a directory to add a file to")
    c.add_argument("--key", metavar="FILE", help="the signing key (default $FRAUD_CHECKPOINT_KEY)")
    c.set_defaults(func=cmd_evidence_checkpoint)
    _users(sub)
    labels = sub.add_parser("labels", help="analysts' labels: copy them into the warehouse",
                            description="Closing a case labels its returns (fraud, abuse, legit) in the evidence\n"
                                        "database; `labels sync` appends them to the warehouse's labels table in a\n"
                                        "new snapshot. `train` and `features build` run it first.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = labels.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    lsub.add_parser("sync", help="copy labels not yet in the warehouse").set_defaults(func=cmd_labels_sync)


def _keys(sub: Subparsers) -> None:
    from fraud_service.access.keys import ROLES

    keys = sub.add_parser("keys", help="API keys with roles: create, list, revoke",
                          description="API keys for `Authorization: Bearer KEY`. Roles: scoring (the returns\n"
                                      "workflow: assess, read assessments), analyst (read assessments and lists,\n"
                                      "work cases), admin (everything, including allow/block lists), metrics\n"
                                      "(read /metrics, for Prometheus).\n"
                                      "Only a hash of each key is stored: a key is shown once, when created.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser("create", help="create a key and print it (once)")
    q.add_argument("--role", required=True, choices=ROLES)
    q.add_argument("--name", help="who or what the key is for (shown in `keys list` and in evidence)")
    q.set_defaults(func=cmd_keys_create)
    ksub.add_parser("list", help="ids, roles, names, creation and revocation times").set_defaults(func=cmd_keys_list)
    q = ksub.add_parser("revoke", help="revoke a key by its id (the part after fsk_)")
    q.add_argument("key_id", metavar="ID")
    q.set_defaults(func=cmd_keys_revoke)


def _lists(sub: Subparsers) -> None:
    from fraud_service.scoring.rules import LIST_ENTITIES, LISTS

    lists = sub.add_parser("lists", help="allow and block lists: add, remove, list",
                           description="Tokens on the allow or block list (the same lists as /v1/lists). A\n"
                                       "blocklisted token denies a return; an allowlisted one approves it unless\n"
                                       "something else involved is blocklisted. Every change is an evidence event.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = lists.add_subparsers(dest="lists_command", metavar="ACTION", required=True)
    q = lsub.add_parser("add", help="put a token on the allow or block list")
    q.add_argument("entity", choices=LIST_ENTITIES, help="what the token is")
    q.add_argument("value", metavar="VALUE", help="the customer id or token")
    q.add_argument("--list", required=True, choices=LISTS, help="allow or block")
    q.add_argument("--reason", required=True, help="why (kept with the entry and in the evidence)")
    q.set_defaults(func=cmd_lists_add)
    q = lsub.add_parser("remove", help="take a token off its list")
    q.add_argument("entity", choices=LIST_ENTITIES)
    q.add_argument("value", metavar="VALUE")
    q.set_defaults(func=cmd_lists_remove)
    lsub.add_parser("list", help="every entry: entity, list, when and by whom, value, reason").set_defaults(
        func=cmd_lists_list)


def _users(sub: Subparsers) -> None:
    users = sub.add_parser("users", help="people who sign in to the analyst UI: create, list, disable",
                           description="Accounts for the analyst UI (/ui/). Roles: analyst (works cases), admin\n"
                                       "(also everything admin keys may do). Passwords are kept as scrypt hashes.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    q = usub.add_parser("create", help="create a user; prints a generated password once")
    q.add_argument("name", metavar="NAME", help="user name: a-z, 0-9, '.', '_', '-'")
    q.add_argument("--role", default="analyst", choices=("analyst", "admin"), help="default analyst")
    q.add_argument("--password-stdin", action="store_true",
                   help="read the password (at least 10 characters) from the first line of stdin")
    q.set_defaults(func=cmd_users_create)
    usub.add_parser("list", help="names, roles, creation and disabling times").set_defaults(func=cmd_users_list)
    q = usub.add_parser("disable", help="disable a user")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_users_disable)
