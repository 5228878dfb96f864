"""Data commands, for whoever feeds the service: generate, import-online-retail, ingest, status, stats, doctor,
features build|materialize."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.cli.common import (
    EXIT_REJECTED,
    Subparsers,
    add_command,
    number_in,
    progress,
    timestamp,
    world_config,
    world_options,
)
from fraud_service.config import Settings
from fraud_service.errors import BadRequest, DatasetError, Unavailable, ValidationFailed

if TYPE_CHECKING:
    from fraud_service.data.ingest import Hub, IngestResult
    from fraud_service.data.warehouse import Warehouse


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a dataset directory and merge it into the warehouse."""
    from fraud_service.data.ingest import ingest
    from fraud_service.data.warehouse import Warehouse

    try:
        result = ingest(Path(args.directory), Warehouse(settings.warehouse_dir), progress(args))
    except (ValidationFailed, DatasetError) as exc:
        if args.report:  # a dataset refused as a whole (a table unreadable, no tables) has no rows to list
            _write_report(args.report, exc.report.to_dict() if isinstance(exc, ValidationFailed) else {  # type: ignore[attr-defined]
                "problems": 1, "groups": [], "refused": str(exc)})
        raise
    warnings = _warnings(result)
    if args.report:  # a job reading it learns this run found nothing: an earlier run's report is not left there
        _write_report(args.report, {"problems": 0, "groups": [], "snapshot": result.snapshot or result.previous,
                                    "warnings": warnings})
    for note in result.notes:
        print(f"note: {note}")
    print(f"{'table':<12} {'file':<22} {'rows':>10} {'added':>10} {'updated':>9} {'unchanged':>10} {'removed':>9} "
          f"{'stored':>10}")
    for name, t in result.tables.items():
        print(f"{name:<12} {t.file:<22} {t.rows:>10,} {t.added:>10,} {t.updated:>9,} {t.unchanged:>10,} "
              f"{t.removed:>9,} {t.total_after:>10,}")
    if result.changed:
        print(f"warehouse snapshot {result.snapshot} is current (was {result.previous or 'empty'}) "
              f"under {settings.warehouse_dir}")
        _print_warnings(warnings, Warehouse(settings.warehouse_dir), result.hubs)
    else:
        print(f"nothing changed: snapshot {result.previous} stays current" if result.previous else
              "nothing ingested: the dataset's tables hold no rows, and the warehouse stays empty")
    return 0


def _print_warnings(warnings: list[dict[str, Any]], warehouse: Warehouse, hubs: list[Hub], shown: int = 5) -> None:
    """New warnings in full (at most SHOWN hubs; `--report` lists every one), hubs an earlier ingest warned of in one
    note line; then those hubs are remembered as warned of."""
    from fraud_service.data.ingest import remember_hubs

    others = [w for w in warnings if w["kind"] != "hub"]
    new = [w for w in warnings if w["kind"] == "hub" and not w["warned_before"]]
    known = [w for w in warnings if w["kind"] == "hub" and w["warned_before"]]
    for warning in others + new[:shown]:
        print(f"warning: {warning['message']}")
    if len(new) > shown:
        print(f"warning: and {len(new) - shown} more tokens shared by very many customers (`--report FILE` lists them "
              "all)")
    if known:
        print("note: still shared by very many customers, as an earlier ingest warned: "
              + "; ".join(f"{w['table']}.{w['column']} {w['value']!r} ({w['customers']:,} customers)"
                          for w in known[:shown]) + (f"; and {len(known) - shown} more" if len(known) > shown else ""))
    try:
        remember_hubs(hubs, warehouse)
    except OSError as exc:
        print(f"note: could not record which shared tokens were warned of ({exc}): the next ingest warns of them again")


def _warnings(result: IngestResult) -> list[dict[str, Any]]:
    """What the ingest took but the data scientist should look at: orders in several currencies, and tokens shared
    by very many customers (each hub marked when an earlier ingest warned of it already)."""
    warnings: list[dict[str, Any]] = []
    if len(result.currencies) > 1:
        warnings.append({"kind": "currencies", "currencies": result.currencies, "message": (
            f"the orders are in {len(result.currencies)} currencies ("
            + ", ".join(f"{c} {n:,}" for c, n in list(result.currencies.items())[:5])
            + "): the features add amounts up as one currency (the data contract: money is in the dataset's "
              "currency); convert them to one and ingest the orders again")})
    for hub in result.hubs:
        warnings.append({"kind": "hub", **dataclasses.asdict(hub), "message": (
            f"{hub.table}.{hub.column} {hub.value!r} is on {hub.rows:,} {hub.table} of {hub.customers:,} customers, "
            "and the features link every customer who shares a token: if it stands for a missing value, write an "
            "empty cell and ingest the table again; a real shared one (a freight forwarder, a pickup point, a "
            "store's terminal) is fine")})
    return warnings


def _write_report(path: str, report: dict[str, object]) -> None:
    """REPORT as JSON in PATH (ingest --report); a failure to write it is said, and the ingest's outcome stands."""
    try:
        Path(path).write_text(json.dumps(report, indent=2))
        print(f"report written to {path}", file=sys.stderr)
    except OSError as failed:  # the problems themselves still reach the terminal
        print(f"error: the report could not be written to {path}: {failed.strerror or failed}", file=sys.stderr)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Show the current warehouse snapshot and its tables."""
    from fraud_service.data.warehouse import Warehouse

    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        print(f"error: warehouse {settings.warehouse_dir} is empty: run `fraud-service ingest DIR` first",
              file=sys.stderr)  # an error, not the status a script would read from stdout
        return EXIT_REJECTED
    print(f"snapshot {snapshot.name} ({snapshot.manifest.get('created_at')}) from {snapshot.manifest.get('source')}")
    tables = snapshot.manifest.get("tables", {})
    assert isinstance(tables, dict)
    for name, info in tables.items():
        print(f"  {name:<12} {info['rows']:>12,} rows")
    print(f"  fingerprint {snapshot.manifest.get('fingerprint')}")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Check that the configured stores are reachable and data is ingested."""
    from fraud_service.health import run_checks

    checks = run_checks(settings)
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<{width}} {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_REJECTED


def cmd_import_online_retail(args: argparse.Namespace, settings: Settings) -> int:
    """Convert the UCI Online Retail file into a contract dataset."""
    from training.datasets.online_retail import import_online_retail

    summary = import_online_retail(Path(args.file), Path(args.out), progress(args), day_first=args.day_first)
    for key, value in summary.__dict__.items():
        print(f"{key:<24} {value:>10,}")
    print(f"contract dataset written to {args.out}; next: fraud-service ingest {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a synthetic returns world in the contract."""
    from training.datasets.synthetic import generate

    config = world_config(args, orders_per_year=args.orders_per_year, return_rate=args.return_rate,
                          fraud_share=args.fraud_share)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadRequest(f"--out {args.out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):  # a dataset there would be overwritten, or keep tables beside the new
        raise BadRequest(f"--out {args.out} is not a new or empty directory: the tables written there would replace "
                         "or mix with what it holds; name another")
    summary = generate(config, Path(args.out), progress(args))
    for key, value in summary.items():
        print(f"{key:<24} {value:>12,}" if isinstance(value, int) else f"{key:<24} {value:>12}")
    print(f"the world runs from {config.start_ts().isoformat()} to {config.end_ts().isoformat()}")
    print(f"contract dataset written to {args.out} (ground truth in {Path(args.out) / 'ground_truth.parquet'}, "
          "never ingested)")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print the behaviour statistics of a contract dataset (return rate, time to return, ...)."""
    from training.datasets.stats import dataset_stats, render_markdown

    stats = [dataset_stats(Path(d)) for d in args.directories]
    print(json.dumps(stats, indent=2) if args.json else render_markdown(stats))
    return 0


def cmd_features_build(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute the feature rows from the warehouse and apply the Feast repository."""
    from fraud_service.featurestore.source import FeatureSource
    from training.labels import sync_labels

    for line in sync_labels(settings, rebuild_features=False, copy=not args.no_sync, progress=progress(args)):
        print(line)
    manifest = FeatureSource(settings).build(progress(args), engine=args.engine)
    rows = manifest["rows"]
    print(f"features built from snapshot {manifest['snapshot']} on {manifest['engine']}: "
          + ", ".join(f"{rows[name]:,} {name} rows" for name in rows))
    print(f"feature repository: {settings.home / 'feature_repo'}; next: fraud-service features materialize")
    return 0


def cmd_features_materialize(args: argparse.Namespace, settings: Settings) -> int:
    """Load the latest feature rows into the online store, incrementally."""
    import datetime as dt

    from fraud_service.featurestore.live import LiveFacts
    from fraud_service.featurestore.source import FeatureSource

    now = dt.datetime.now(dt.UTC)
    end = args.until.to_pydatetime() if args.until is not None else now
    if end > now + dt.timedelta(days=1):
        raise BadRequest(f"--until {end.isoformat()} is in the future: the online store is loaded up to a time that "
                         "has come (leave it out for now)")
    if end.year < 1971:
        raise BadRequest(f"--until {end.isoformat()} is before any feature row (1970): leave it out for now")
    source = FeatureSource(settings)
    first = source.first_row_time()
    if first is not None and end < first:
        raise BadRequest(f"--until {end.isoformat()} is before the first feature row ({first.isoformat()}): the "
                         "online store would hold no entity's features (leave it out for now)")
    last = (source.materialized() or {}).get("until")
    if last is not None and dt.datetime.fromisoformat(last) > end and not args.full:
        raise BadRequest(f"the online store was last loaded up to {last}; --until {end.isoformat()} is earlier "
                         "and would load nothing (add --full to reload every entity as of then)")
    with progress(args).step(f"materialising into the {settings.online_store} online store up to {end.isoformat()}"):
        every = source.materialize(end, full=args.full, progress=progress(args))
    live = LiveFacts(source)
    try:
        with live.db.unreadable():
            pruned = live.prune_ingested(end)
    except Unavailable as exc:
        raise Unavailable(f"the online store holds every entity's features as of {end.isoformat()}, but the live "
                          f"facts they now cover were not dropped ({exc}): until they are, the returns assessed "
                          "since the last build count twice online. Run `fraud-service features materialize` again "
                          "once the live-fact log answers") from exc
    print(f"online store ({settings.online_store}) holds every entity's features as of {end.isoformat()}"
          + (" (every entity reloaded)" if every else "")
          + (f"; {pruned} live fact(s) now covered by the offline rows were dropped" if pruned else ""))
    return 0


def register(sub: Subparsers) -> None:
    """The data commands."""
    _datasets(sub)
    p = add_command(sub, "ingest", cmd_ingest, "validate a contract dataset and add it to the warehouse",
                    "Read DIR (NAME.parquet or NAME.csv per contract table: customers, orders, order_items,\n"
                    "returns, labels, inspections), check every row against the data contract, and merge it\n"
                    "into the warehouse under $FRAUD_HOME/warehouse. With any problem nothing is written and\n"
                    "the exit code is 1; the report names file, row, column, value and what was expected.\n"
                    "Re-ingesting the same rows changes nothing; a later period adds its rows.\n\n"
                    "The tables' columns and types: docs/data.md (the data contract). labels and inspections\n"
                    "may be left out; times without an offset are UTC; column names are exact.")
    p.add_argument("directory", metavar="DIR", help="dataset directory")
    p.add_argument("--report", metavar="FILE", help="also write the problem report as JSON to FILE (also when there "
                                                    "are none: {\"problems\": 0, ...}, so no earlier report is left)")
    p.set_defaults(home="makes")  # the first ingest sets up a new FRAUD_HOME
    add_command(sub, "status", cmd_status, "show the warehouse's current snapshot",
                "Print the current warehouse snapshot: its tables, row counts and data fingerprint.")
    add_command(sub, "doctor", cmd_doctor, "check the configuration and that every store answers",
                "Check the warehouse, the evidence database (FRAUD_DATABASE_URL: it answers and its schema\n"
                "is current), the features (built, and loaded into the online store since), the production\n"
                "model (it loads, its files as sealed), the shopper messages and, when\n"
                "FRAUD_ONLINE_STORE=redis, the Redis server. Exit code 1 when any check fails.")
    p = add_command(sub, "stats", cmd_stats, "behaviour statistics of a contract dataset",
                    "Return rate, time from order to return, basket sizes and returner concentration of\n"
                    "each dataset DIR, side by side as a Markdown table (or JSON).")
    p.add_argument("directories", metavar="DIR", nargs="+", help="a dataset directory of contract tables")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.set_defaults(home=None)
    _features(sub)


def _datasets(sub: Subparsers) -> None:
    p = add_command(sub, "import-online-retail", cmd_import_online_retail,
                    "convert the UCI Online Retail file into a contract dataset",
                    "Map the UCI Online Retail transactions (invoices starting with C are returns) onto the\n"
                    "contract. Tokens, delivery times and return reasons, which the source lacks, are\n"
                    "synthesised deterministically (see docs/data.md). Rows without a customer are dropped.")
    p.add_argument("file", metavar="FILE", help="online_retail.parquet (or .csv, UTF-8 or Latin-1)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory to write the dataset to")
    p.add_argument("--day-first", action="store_true",
                   help="a CSV's InvoiceDate is D/M/YYYY H:MM (default: ISO 8601, or M/D/YYYY H:MM as in the UCI "
                        "CSV)")
    p.set_defaults(home=None)
    p = add_command(sub, "generate", cmd_generate, "generate a synthetic returns world with fraud and abuse",
                    "Write a realistic returns history in the contract: legitimate behaviour calibrated on\n"
                    "the Online Retail data, plus fraud rings, empty-box and item-switch returns,\n"
                    "wardrobing, fake item-not-received claims, refund diversion and account takeover,\n"
                    "with late, partial and sometimes wrong labels. Deterministic for a seed. Also writes\n"
                    "DIR/ground_truth.parquet (the true typology of every return), which ingest ignores.")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory to write the dataset to")
    p.set_defaults(home=None)
    world_options(p)
    p.add_argument("--orders-per-year", type=number_in(0.01, 1000), default=None,
                   help="mean orders per customer per year (default: Online Retail's 4.0)")
    p.add_argument("--return-rate", type=number_in(0, 1), default=None,
                   help="mean share of orders with a return (default: Online Retail's 0.18)")
    p.add_argument("--fraud-share", type=number_in(0, 0.5), default=None,
                   help="share of customers who are fraudsters or abusers (default 0.03)")


def _features(sub: Subparsers) -> None:
    features = sub.add_parser("features", help="build and materialise the feature store",
                              description="The Feast feature store of return histories.")
    fsub = features.add_subparsers(dest="features_command", metavar="STEP", required=True)
    p = add_command(fsub, "build", cmd_features_build,
                    "compute feature rows from the warehouse and apply the Feast repository",
                    "Compute every entity's timestamped feature rows (customer, address, payment,\n"
                    "device and refund-destination tokens) from the current warehouse snapshot with\n"
                    "DuckDB (or Spark), write them under $FRAUD_HOME/features, and register the Feast\n"
                    "repository in $FRAUD_HOME/feature_repo. See docs/features.md.")
    p.add_argument("--no-sync", action="store_true",
                   help="do not copy analysts' labels into the warehouse first (`labels sync`)")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="duckdb (default): this machine; spark: Apache Spark on FRAUD_SPARK_MASTER (default "
                        "local[*], Java 17+), the same rows for histories one machine cannot hold "
                        "(docs/deployment.md#spark)")
    p = add_command(fsub, "materialize", cmd_features_materialize,
                    "load the latest rows into the online store (incremental)",
                    "Copy each entity's latest feature row up to --until (default now) into the\n"
                    "online store (sqlite, or Redis when FRAUD_ONLINE_STORE=redis). Only rows newer\n"
                    "than the last materialisation are read, unless the features were built again since\n"
                    "(a new ingest's rows may be dated earlier): then every entity is reloaded.")
    p.add_argument("--until", metavar="TIMESTAMP", type=timestamp, help="ISO 8601 end (default: now)")
    p.add_argument("--full", action="store_true",
                   help="reload every entity, not only what changed (after switching the online store)")
