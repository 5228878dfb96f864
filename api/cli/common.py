"""What every audience's commands share: exit codes, argument types, progress, the subcommand helper."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from fraud_service.config import Settings
from fraud_service.progress import Progress

EXIT_OK = 0
EXIT_REJECTED = 1
"""The input was rejected (validation, missing data, a store that does not answer); the message says why."""
EXIT_USAGE = 2
"""argparse's own exit code for a command line it cannot parse."""

Command = Callable[[argparse.Namespace, Settings], int]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def add_command(sub: Subparsers, name: str, func: Command, help_text: str, description: str) -> argparse.ArgumentParser:
    """A subcommand running FUNC, its description printed as written."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def progress(args: argparse.Namespace) -> Progress:
    """Progress lines on stderr, unless --quiet."""
    return Progress(enabled=not args.quiet)


def timestamp(text: str) -> object:
    """argparse type: a date or ISO 8601 timestamp (naive = UTC)."""
    from training.trainset import timestamp as parse

    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 timestamp") from None


def positive_int(text: str) -> int:
    """argparse type: an integer above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def when(at: dt.datetime | None) -> str:
    """A stored time for a table column: UTC, to the second ('-' when there is none)."""
    if at is None:
        return "-"
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    return at.isoformat(timespec="seconds")[:19]


def cli_actor() -> str:
    """Who the evidence names for a command run at this terminal."""
    import getpass

    return f"cli:{getpass.getuser()}"


def world_options(p: argparse.ArgumentParser, customers: int = 20000, days: int = 365) -> None:
    """The options of a generated world (`generate`, `demo`)."""
    p.add_argument("--customers", type=positive_int, default=customers,
                   help=f"number of customers (default {customers})")
    p.add_argument("--days", type=positive_int, default=days, help=f"days of history (default {days})")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--start", default="2025-01-01", help="first day, YYYY-MM-DD (default 2025-01-01)")
