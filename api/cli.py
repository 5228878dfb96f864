"""The `fraud-service` command line: a face over the core services and over `training`.

Heavy libraries are imported inside the commands, so `--help` answers at once.
Exit codes: 0 success, 1 the input was rejected (validation, missing data), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fraud_service.config import Settings
from fraud_service.errors import FraudServiceError, ValidationFailed
from fraud_service.progress import Progress

EXIT_REJECTED = 1

EPILOG = """\
environment:
  FRAUD_HOME            data directory (default ./var)
  FRAUD_DATABASE_URL    evidence database (default sqlite:///$FRAUD_HOME/fraud.db)
  FRAUD_ONLINE_STORE    sqlite (default) or redis
  FRAUD_REDIS_URL       redis://127.0.0.1:6379/0 by default
  FRAUD_HOST, FRAUD_PORT  where `serve` listens (127.0.0.1:8000)
"""


def _progress(args: argparse.Namespace) -> Progress:
    return Progress(enabled=not args.quiet)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a dataset directory and merge it into the warehouse."""
    from fraud_service.ingest import ingest
    from fraud_service.warehouse import Warehouse

    try:
        result = ingest(Path(args.directory), Warehouse(settings.warehouse_dir), _progress(args))
    except ValidationFailed as exc:
        if args.report:
            Path(args.report).write_text(json.dumps(exc.report.to_dict(), indent=2))  # type: ignore[attr-defined]
            print(f"full report written to {args.report}", file=sys.stderr)
        raise
    print(f"{'table':<12} {'file':<22} {'rows':>10} {'added':>10} {'updated':>9} {'unchanged':>10} {'stored':>10}")
    for name, t in result.tables.items():
        print(f"{name:<12} {t.file:<22} {t.rows:>10,} {t.added:>10,} {t.updated:>9,} {t.unchanged:>10,} "
              f"{t.total_after:>10,}")
    if result.changed:
        print(f"warehouse snapshot {result.snapshot} is current (was {result.previous or 'empty'}) "
              f"under {settings.warehouse_dir}")
    else:
        print(f"nothing changed: snapshot {result.previous} stays current")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Show the current warehouse snapshot and its tables."""
    from fraud_service.warehouse import Warehouse

    snapshot = Warehouse(settings.warehouse_dir).current()
    if snapshot is None:
        print(f"warehouse {settings.warehouse_dir} is empty: run `fraud-service ingest DIR` first")
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
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<10} {check.detail}")
    return 0 if all(c.ok for c in checks) else EXIT_REJECTED


def cmd_import_online_retail(args: argparse.Namespace, settings: Settings) -> int:
    """Convert the UCI Online Retail file into a contract dataset."""
    from training.datasets.online_retail import import_online_retail

    summary = import_online_retail(Path(args.file), Path(args.out), _progress(args))
    for key, value in summary.__dict__.items():
        print(f"{key:<24} {value:>10,}")
    print(f"contract dataset written to {args.out}; next: fraud-service ingest {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a synthetic returns world in the contract."""
    from training.datasets.synthetic import WorldConfig, generate

    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed, start=args.start,
                         orders_per_year=args.orders_per_year, return_rate=args.return_rate,
                         fraud_share=args.fraud_share)
    summary = generate(config, Path(args.out), _progress(args))
    for key, value in summary.items():
        print(f"{key:<24} {value:>12,}" if isinstance(value, int) else f"{key:<24} {value:>12}")
    print(f"contract dataset written to {args.out} (ground truth in {Path(args.out) / 'ground_truth.parquet'}, "
          "never ingested)")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print the behaviour statistics of a contract dataset (return rate, time to return, ...)."""
    from training.datasets.stats import dataset_stats, render_markdown

    stats = [dataset_stats(Path(d)) for d in args.directories]
    print(json.dumps(stats, indent=2) if args.json else render_markdown(stats))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate a small demo world (unless already there) and ingest it: the data half of `make run`."""
    from fraud_service.ingest import ingest
    from fraud_service.warehouse import Warehouse
    from training.datasets.synthetic import WorldConfig, generate, is_generated

    progress = _progress(args)
    out = Path(args.out)
    config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed)
    if is_generated(out, config):
        progress.info(f"demo dataset in {out} is already generated with these settings")
    else:
        generate(config, out, progress)
    result = ingest(out, Warehouse(settings.warehouse_dir), progress)
    current = Warehouse(settings.warehouse_dir).current()
    assert current is not None
    print(f"demo: {config.customers:,} customers over {config.days} days generated in {out}")
    print(f"demo: ingested into {settings.warehouse_dir} (snapshot {current.name}; "
          f"{'new' if result.changed else 'unchanged'}): "
          + ", ".join(f"{current.rows(t):,} {t}" for t in ("customers", "orders", "returns", "labels")))
    from fraud_service.feature_source import FeatureSource

    source = FeatureSource(settings)
    if source.built_from() == current.name:
        progress.info(f"features are already built from snapshot {current.name}")
    else:
        source.build(progress)
    with progress.step("materialising the online store"):
        source.materialize()
    print(f"demo: features built from snapshot {current.name} and materialised into the "
          f"{settings.online_store} online store")
    return 0


def cmd_features_build(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute the feature rows from the warehouse and apply the Feast repository."""
    from fraud_service.feature_source import FeatureSource

    manifest = FeatureSource(settings).build(_progress(args))
    rows = manifest["rows"]
    print(f"features built from snapshot {manifest['snapshot']}: "
          + ", ".join(f"{rows[name]:,} {name} rows" for name in rows))
    print(f"feature repository: {settings.home / 'feature_repo'}; next: fraud-service features materialize")
    return 0


def cmd_features_materialize(args: argparse.Namespace, settings: Settings) -> int:
    """Load the latest feature rows into the online store, incrementally."""
    import datetime as dt

    from fraud_service.feature_source import FeatureSource

    end = dt.datetime.fromisoformat(args.until) if args.until else dt.datetime.now(dt.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    progress = _progress(args)
    from fraud_service.freshness import LiveFacts

    source = FeatureSource(settings)
    with progress.step(f"materialising into the {settings.online_store} online store up to {end.isoformat()}"):
        source.materialize(end, full=args.full)
    pruned = LiveFacts(source).prune_ingested(end)
    print(f"online store ({settings.online_store}) holds every entity's features as of {end.isoformat()}"
          + (f"; {pruned} live fact(s) now covered by the offline rows were dropped" if pruned else ""))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the service under gunicorn on FRAUD_HOST:FRAUD_PORT."""
    import os

    host = args.host or settings.host
    port = args.port or settings.port
    print(f"serving on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    argv = ["gunicorn", "--workers", str(args.workers), "--bind", f"{host}:{port}",
            "--access-logfile", "-", "api.app:create_app()"]
    gunicorn = Path(sys.executable).with_name("gunicorn")
    os.execv(str(gunicorn), argv)
    return 0  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fraud-service",
        description="Catch fraud and abuse in e-commerce returns: ingest data, generate worlds, serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace, Settings], int], help_text: str,
            description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("ingest", cmd_ingest, "validate a contract dataset and add it to the warehouse",
            "Read DIR (NAME.parquet or NAME.csv per contract table: customers, orders, order_items,\n"
            "returns, labels, inspections), check every row against the data contract, and merge it\n"
            "into the warehouse under $FRAUD_HOME/warehouse. With any problem nothing is written and\n"
            "the exit code is 1; the report names file, row, column, value and what was expected.\n"
            "Re-ingesting the same rows changes nothing; a later period adds its rows.")
    p.add_argument("directory", metavar="DIR", help="dataset directory")
    p.add_argument("--report", metavar="FILE", help="also write the problem report as JSON to FILE")

    add("status", cmd_status, "show the warehouse's current snapshot",
        "Print the current warehouse snapshot: its tables, row counts and data fingerprint.")

    add("doctor", cmd_doctor, "check the configuration and that every store answers",
        "Check the warehouse, the evidence database (FRAUD_DATABASE_URL) and, when\n"
        "FRAUD_ONLINE_STORE=redis, the Redis server. Exit code 1 when any check fails.")

    p = add("import-online-retail", cmd_import_online_retail,
            "convert the UCI Online Retail file into a contract dataset",
            "Map the UCI Online Retail transactions (invoices starting with C are returns) onto the\n"
            "contract. Tokens, delivery times and return reasons, which the source lacks, are\n"
            "synthesised deterministically (see docs/data.md). Rows without a customer are dropped.")
    p.add_argument("file", metavar="FILE", help="online_retail.parquet (or .csv)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the dataset to")

    p = add("generate", cmd_generate, "generate a synthetic returns world with fraud and abuse",
            "Write a realistic returns history in the contract: legitimate behaviour calibrated on\n"
            "the Online Retail data, plus fraud rings, empty-box and item-switch returns,\n"
            "wardrobing, fake item-not-received claims, refund diversion and account takeover,\n"
            "with late, partial and sometimes wrong labels. Deterministic for a seed. Also writes\n"
            "DIR/ground_truth.parquet (the true typology of every return), which ingest ignores.")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the dataset to")
    _world_options(p)
    p.add_argument("--orders-per-year", type=float, default=None,
                   help="mean orders per customer per year (default: Online Retail's 4.0)")
    p.add_argument("--return-rate", type=float, default=None,
                   help="mean share of orders with a return (default: Online Retail's 0.18)")
    p.add_argument("--fraud-share", type=float, default=None,
                   help="share of customers who are fraudsters or abusers (default 0.03)")

    p = add("stats", cmd_stats, "behaviour statistics of a contract dataset",
            "Return rate, time from order to return, basket sizes and returner concentration of\n"
            "each dataset DIR, side by side as a Markdown table (or JSON).")
    p.add_argument("directories", metavar="DIR", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")

    p = add("demo", cmd_demo, "generate a demo world, ingest it, build features (what `make run` does first)",
            "Generate a small synthetic world into --out (skipped when it is already there with the\n"
            "same settings), ingest it into the warehouse, build the feature store from it (skipped\n"
            "when already built from the same snapshot) and materialise the online store.")
    p.add_argument("--out", required=True, metavar="DIR")
    _world_options(p, customers=2000, days=180)

    features = sub.add_parser("features", help="build and materialise the feature store",
                              description="The Feast feature store of return histories.")
    fsub = features.add_subparsers(dest="features_command", metavar="STEP", required=True)
    p = fsub.add_parser("build", help="compute feature rows from the warehouse and apply the Feast repository",
                        description="Compute every entity's timestamped feature rows (customer, address, payment,\n"
                                    "device and refund-destination tokens) from the current warehouse snapshot with\n"
                                    "DuckDB, write them under $FRAUD_HOME/features, and register the Feast\n"
                                    "repository in $FRAUD_HOME/feature_repo. See docs/features.md.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_features_build)
    p = fsub.add_parser("materialize", help="load the latest rows into the online store (incremental)",
                        description="Copy each entity's latest feature row up to --until (default now) into the\n"
                                    "online store (sqlite, or Redis when FRAUD_ONLINE_STORE=redis). Only rows newer\n"
                                    "than the last materialisation are read.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--until", metavar="TIMESTAMP", help="ISO 8601 end (default: now)")
    p.add_argument("--full", action="store_true",
                   help="reload every entity, not only what changed (after switching the online store)")
    p.set_defaults(func=cmd_features_materialize)

    p = add("serve", cmd_serve, "run the web service (gunicorn)",
            "Serve the HTTP API and pages under gunicorn on FRAUD_HOST:FRAUD_PORT.")
    p.add_argument("--host", default=None, help="interface (default FRAUD_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default FRAUD_PORT or 8000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    return parser


def _world_options(p: argparse.ArgumentParser, customers: int = 20000, days: int = 365) -> None:
    p.add_argument("--customers", type=_positive_int, default=customers,
                   help=f"number of customers (default {customers})")
    p.add_argument("--days", type=_positive_int, default=days, help=f"days of history (default {days})")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--start", default="2025-01-01", help="first day, YYYY-MM-DD (default 2025-01-01)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fraud-service` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except FraudServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print("interrupted; nothing half-written is left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
