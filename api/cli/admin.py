"""Administration commands, for whoever runs the service: serve, db, keys, lists, evidence, labels (users: users.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import stat
import sys
from pathlib import Path

from api import gunicorn_conf
from api.cli.common import (
    EXIT_REJECTED,
    Subparsers,
    add_command,
    cli_actor,
    number_in,
    positive_int_at_most,
    progress,
    when,
    whole_number_at_most,
)
from fraud_service.config import Settings


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Create or migrate the evidence database schema to the newest revision."""
    from fraud_service.bootstrap import evidence

    with evidence(settings, migrated=False) as db:
        before, head = db.upgrade(others_ok=args.others_connected)
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
        key = create_key(db.uow(), args.role, args.name, cli_actor())
    print(key)
    article = "an" if args.role[0] in "aeiou" else "a"
    print(f"created {article} {args.role} key; it is shown only now: store it, send it as `Authorization: Bearer KEY`",
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
    shared: dict[str, list[str]] = {}
    for k in keys:
        if k.role == "scoring" and k.revoked_at is None:
            shared.setdefault(k.name, []).append(k.id)
    for name, ids in shared.items():
        if len(ids) > 1:  # keys made without --name before they were named after themselves were all "scoring key"
            print(f"note: the active scoring keys {', '.join(ids)} share the name {name!r}, so each sees the others' "
                  "assessments (a key rotated under one name); if they are different clients, give each a key of its "
                  "own name and revoke these", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke an API key by its id (running workers stop accepting it within 30 s)."""
    from fraud_service.access.keys import revoke_key
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        revoke_key(db.uow(), args.key_id, cli_actor())
    print(f"key {args.key_id} revoked (running workers honour it within 30 seconds)")
    return 0


def cmd_lists_add(args: argparse.Namespace, settings: Settings) -> int:
    """Put a token on the allow or block list (an evidence event; running workers see it within a second)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import lists

    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=args.expires_in_days) if args.expires_in_days else None
    with evidence(settings) as db:
        entry = lists.add(db.uow(), entity=args.entity, value=args.value, list_name=args.list, reason=args.reason,
                          actor=cli_actor(), now=now, expires_at=expires)
    until = f" until {entry.expires_at[:16]} UTC" if entry.expires_at else ""
    print(f"{entry.entity} {entry.value} is on the {entry.list} list{until} ({entry.reason}); running workers apply "
          "it within a second")
    return 0


def cmd_lists_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Take a token off its list (an evidence event)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.scoring import lists

    with evidence(settings) as db:
        entry = lists.remove(db.uow(), entity=args.entity, value=args.value, actor=cli_actor(), reason=args.reason)
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
    now = dt.datetime.now(dt.UTC)
    print(f"{'entity':<9} {'list':<6} {'added':<20} {'expires':<20} {'by':<20} {'value':<30} reason")
    for e in entries:
        ends = "expired" if e.expired(now) else (e.expires_at or "never")[:19]
        print(f"{e.entity:<9} {e.list:<6} {e.added_at[:19]:<20} {ends:<20} {e.added_by:<20} {e.value:<30} {e.reason}")
    return 0


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


def _metrics_dir(home: Path, port: int) -> Path:
    """Where this instance's workers keep their metrics: in memory (/dev/shm), in a folder of this user's alone,
    named after the home and the port; else $FRAUD_HOME/metrics/PORT. prometheus_client maps those files into memory
    and writes into their unallocated parts: on a full disk that killed every worker with SIGBUS as it counted a
    request, over and over (each restart adding files), where the evidence writer answers 503."""
    import hashlib

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        mine = shm / f"fraud-service-{os.getuid()}"
        try:
            mine.mkdir(mode=0o700, exist_ok=True)
            held = mine.lstat()
        except OSError:
            held = None
        # another user's folder (or a link) there could read or plant our figures: not used
        if held is not None and stat.S_ISDIR(held.st_mode) and held.st_uid == os.getuid() \
                and not held.st_mode & 0o077:
            return mine / f"{hashlib.sha256(str(home).encode()).hexdigest()[:16]}-{port}"
    return home / "metrics" / str(port)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate the evidence database, then run the service under gunicorn on FRAUD_HOST:FRAUD_PORT."""
    import shutil

    from fraud_service.bootstrap import evidence
    from fraud_service.feedback.messages import load

    load(settings.customer_messages)  # a bad FRAUD_CUSTOMER_MESSAGES is one line here, not a worker's traceback
    with evidence(settings, migrated=False) as db:
        db.upgrade()
    host = args.host or settings.host
    port = args.port or settings.port
    analyst = port + 1 if args.analyst_port is None else args.analyst_port
    if analyst == port or not 0 <= analyst < 65536:
        print(f"error: the analyst port must be another TCP port than {port} (or 0 for none); got {analyst}",
              file=sys.stderr)
        return EXIT_REJECTED
    for free in (port, analyst) if analyst else (port,):
        if not _port_free(host, free, args.port_wait):
            print(f"error: {host}:{free} is still in use after {args.port_wait:g} s; stop what holds it (`ss -ltnp "
                  f"'sport = :{free}'`) or serve on other ports (--port, --analyst-port)", file=sys.stderr)
            return EXIT_REJECTED
    # api.metrics sums this instance's workers' figures from here; another instance on the same home (another
    # port) keeps its own directory, so neither empties nor counts the other's
    metrics_dir = _metrics_dir(settings.home, port)
    shutil.rmtree(metrics_dir, ignore_errors=True)  # an earlier run's figures (its port is free now)
    metrics_dir.mkdir(parents=True)
    # gunicorn runs in this process (execv): the folder is its master's to remove when it exits
    (metrics_dir / gunicorn_conf.OWNER).write_text(str(os.getpid()))
    # prometheus_client reads PROMETHEUS_MULTIPROC_DIR; Feast, on import, makes its own directory unless
    # PROMETHEUS_MULTIPROCESS_DIR is set: both point at ours, and FRAUD_METRICS_DIR tells the app it is ours
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = str(metrics_dir)
    os.environ["FRAUD_METRICS_DIR"] = str(metrics_dir)
    binds = ["--bind", f"{host}:{port}"]
    workers = args.workers
    if analyst:  # one more worker, niced, serving only the analyst port (api.gunicorn_worker)
        binds += ["--bind", f"{host}:{analyst}"]
        workers += 1
        os.environ["FRAUD_ANALYST_PORT"] = str(analyst)
        os.environ["FRAUD_ANALYST_LOCK"] = str(metrics_dir / "analyst-worker.lock")  # one analyst worker per instance
    ui = f"http://{host}:{analyst or port}/ui/"
    print(f"serving on http://{host}:{port}/ (Ctrl-C stops); analyst UI: {ui} "
          "(users: fraud-service users create NAME); API keys: fraud-service keys create --role ROLE", flush=True)
    argv = ["gunicorn", "--workers", str(workers), "--threads", str(args.threads),
            "--worker-class", "api.gunicorn_worker.BalancedThreadWorker", *binds,
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
    p.add_argument("--port", type=positive_int_at_most(65_535), default=None, help="port (default FRAUD_PORT or 8000)")
    p.add_argument("--workers", type=positive_int_at_most(64), default=2,
                   help="gunicorn worker processes for the main port (default 2)")
    p.add_argument("--analyst-port", type=whole_number_at_most(65_535), default=None, metavar="PORT",
                   help="the port of the analyst UI, served by one more worker at a lower CPU priority so that "
                        "analysts' pages do not slow scoring (default: --port + 1; 0: no separate port, the UI is "
                        "served on the main port only). The UI and API work on both ports")
    p.add_argument("--port-wait", type=number_in(0, 3600), default=30.0, metavar="SECONDS",
                   help="how long to wait for the port to be free before giving up (default 30)")
    p.add_argument("--threads", type=positive_int_at_most(256), default=8,
                   help="threads per worker (default 8: a thread holds its connection while its evidence commits; "
                        "8 answered more requests than 4 at 16 connections in the load benchmark)")
    db = sub.add_parser("db", help="the evidence database schema",
                        description="The evidence database (FRAUD_DATABASE_URL, default SQLite in $FRAUD_HOME).")
    db.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = dsub.add_parser("upgrade", help="create or migrate the schema to the newest revision (Alembic)",
                        description="Create or migrate the evidence database's schema to the newest revision. On\n"
                                    "PostgreSQL a migration is refused while other sessions use the database:\n"
                                    "instances of the older code would go on writing the old way under the new\n"
                                    "schema. Stop every instance first (docs/operations.md).",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--others-connected", action="store_true",
                   help="migrate even while other sessions use the database (they must not be instances of the "
                        "older code)")
    q.set_defaults(func=cmd_db_upgrade)
    _keys(sub)
    _lists(sub)
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
    keys.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser("create", help="create a key and print it (once)")
    q.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    q.add_argument("--name", help="who or what the key is for (shown in `keys list` and in evidence). Scoring keys "
                                  "of one name see each other's assessments: give a new key its client's name to "
                                  "rotate it. Default: a name of the key's own (`scoring key ID`), a client apart")
    q.set_defaults(func=cmd_keys_create)
    ksub.add_parser("list", help="ids, roles, names, creation and revocation times").set_defaults(func=cmd_keys_list)
    q = ksub.add_parser("revoke", help="revoke a key by its id (the part after fsk_)")
    q.add_argument("key_id", metavar="ID", help="the key's id, as `keys list` shows it")
    q.set_defaults(func=cmd_keys_revoke)


def _lists(sub: Subparsers) -> None:
    from fraud_service.scoring.rules import LIST_ENTITIES, LISTS

    lists = sub.add_parser("lists", help="allow and block lists: add, remove, list",
                           description="Tokens on the allow or block list (the same lists as /v1/lists). A\n"
                                       "blocklisted token denies a return; an allowlisted one approves it unless\n"
                                       "something else involved is blocklisted. Every change is an evidence event.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    lists.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    lsub = lists.add_subparsers(dest="lists_command", metavar="ACTION", required=True)
    q = lsub.add_parser("add", help="put a token on the allow or block list")
    q.add_argument("entity", choices=LIST_ENTITIES, help="what the token is")
    q.add_argument("value", metavar="VALUE", help="the customer id or token")
    q.add_argument("--list", required=True, choices=LISTS, help="allow or block")
    q.add_argument("--reason", required=True, help="why (kept with the entry and in the evidence)")
    q.add_argument("--expires-in-days", type=_positive_days, metavar="DAYS",
                   help="the entry stops matching after DAYS days (it stays listed, marked expired); default: never")
    q.set_defaults(func=cmd_lists_add)
    q = lsub.add_parser("remove", help="take a token off its list")
    q.add_argument("entity", choices=LIST_ENTITIES, help="what the token is")
    q.add_argument("value", metavar="VALUE", help="the customer id or token, as listed")
    q.add_argument("--reason", help="why it comes off (kept in the evidence)")
    q.set_defaults(func=cmd_lists_remove)
    lsub.add_parser("list", help="every entry: entity, list, when and by whom, value, reason").set_defaults(
        func=cmd_lists_list)


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}: a number of days above 0") from None
    if not 0 < days <= 36500:
        raise argparse.ArgumentTypeError(f"got {text}: a number of days above 0 (at most 36500)")
    return days


