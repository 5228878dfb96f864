"""What every audience's commands share: exit codes, argument types, progress, the subcommand helper."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fraud_service.config import Settings
from fraud_service.errors import BadRequest, ConfigError
from fraud_service.progress import Progress

EXIT_OK = 0
EXIT_REJECTED = 1
"""The input was rejected (validation, missing data, a store that does not answer); the message says why."""
EXIT_USAGE = 2
"""argparse's own exit code for a command line it cannot parse."""

Command = Callable[[argparse.Namespace, Settings], int]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


class StoreOnce(argparse._StoreAction):
    """argparse's store action, refusing an option given twice: argparse would keep the last value and drop the
    first without a word (`--train-until 2011-06-01 ... --train-until 2011-09-01`). `once_anywhere` gives it to
    every option that stores one value."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given: dict[str, str] = namespace.__dict__.setdefault(GIVEN, {})
        if self.dest in given:  # the values as parsed (`now` is None, a date a timestamp): not shown, not as typed
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]}, then {option_string}); it takes "
                                               "one value")
        given[self.dest] = str(option_string)
        super().__call__(parser, namespace, values, option_string)


GIVEN = "_given_options"
"""Where `StoreOnce` keeps the options given so far (removed from the parsed arguments by `given_options`)."""


def once_anywhere(parser: argparse.ArgumentParser) -> None:
    """Every option of PARSER and its subcommands that stores one value refuses to be given twice."""
    for action in parser._actions:  # argparse keeps its subcommands there; there is no public way to walk them
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                once_anywhere(child)
        elif type(action) is argparse._StoreAction and action.option_strings:
            action.__class__ = StoreOnce


def given_options(args: argparse.Namespace) -> set[str]:
    """The destinations of the one-value options the command line gave (not their defaults), taken off ARGS."""
    return set(vars(args).pop(GIVEN, {}))


def add_command(sub: Subparsers, name: str, func: Command, help_text: str, description: str) -> argparse.ArgumentParser:
    """A subcommand running FUNC, its description printed as written."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


HomeUse = str | None | Callable[[argparse.Namespace, Settings], str | None]
"""How a command uses FRAUD_HOME, given as `parser.set_defaults(home=...)` (or a function of the arguments and
settings), checked by `check_home` before it runs: "reads" (the default) needs it to exist; "makes" (ingest, demo)
sets up a new home; "database" uses only the evidence database, so needs the home only when that is a SQLite file
(by default, in the home); None does not use it."""


def check_home(args: argparse.Namespace, settings: Settings) -> str | None:
    """ConfigError naming FRAUD_HOME (or a SQLite database's folder) when the command needs it and it does not exist:
    a mistyped path is said, not made into a new, empty home. Returns a note when the command will make the home."""
    given: HomeUse = getattr(args, "home", "reads")
    use = given(args, settings) if callable(given) else given
    home = settings.home
    if use == "database":
        file = settings.sqlite_file
        if file is None or file.parent.is_dir():
            return None
        if file.parent != home:
            raise ConfigError(f"FRAUD_DATABASE_URL={settings.database_url}: the folder {file.parent} does not exist "
                              "(a typo?); the evidence database is made in an existing folder, not with its folders")
    if use is None or home.is_dir():
        return None
    if use == "makes":
        return f"FRAUD_HOME {home} does not exist yet: setting up a new home there"
    unset = "" if os.environ.get("FRAUD_HOME") else " (FRAUD_HOME is not set: the default is ./var, here)"
    state = "is not a directory" if home.exists() else "does not exist"
    raise ConfigError(f"FRAUD_HOME {home} {state}{unset}: check the path, nothing was made there. "
                      "`fraud-service ingest DIR` or `fraud-service demo --out DIR` sets up a new home")


def progress(args: argparse.Namespace) -> Progress:
    """Progress lines on stderr, unless --quiet."""
    return Progress(enabled=not args.quiet)


RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+(?:\.\d+)?)d)?$")


def timestamp_value(text: str) -> Any:
    """A UTC pandas Timestamp from a date, ISO 8601 text (naive = UTC), `now` or `now-30d`; or ValueError."""
    import pandas as pd

    from training.trainset import timestamp as parse

    relative = RELATIVE.match(text.strip().lower())
    if relative:
        return pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=float(relative.group(1) or 0))
    stamp = parse(text)
    if pd.isna(stamp):  # pandas reads `nan`, `NaT` and `` as no time at all
        raise ValueError(f"{text!r} is no time")
    if not CLI_YEARS[0] <= stamp.year <= CLI_YEARS[1]:
        raise ValueError(f"{text!r} is outside the years {CLI_YEARS[0]} to {CLI_YEARS[1]}")
    return stamp


CLI_YEARS = (1900, 2200)
"""The years a command's date may fall in: windows around it are computed in nanoseconds (1678 to 2261)."""


def timestamp(text: str) -> object:
    """argparse type: a date or ISO 8601 timestamp (naive = UTC)."""
    try:
        return timestamp_value(text)
    except ValueError as exc:
        years = f" in the years {CLI_YEARS[0]} to {CLI_YEARS[1]}" if "outside the years" in str(exc) else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD), an ISO 8601 timestamp, now or "
                                         f"now-Nd{years}") from None


def train_until(text: str) -> object:
    """argparse type: a label cutoff, or `now` (None: the trainer keeps the last days as its test window)."""
    return None if text.strip().lower() == "now" else timestamp(text)


def share(text: str) -> float:
    """argparse type: a share in [0, 1], as 0.05 or 5%."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share (0.05 or 5%)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (0% and 100%)")
    return value


def number_in(low: float, high: float) -> Callable[[str], float]:
    """argparse type: a finite number from LOW to HIGH (not nan, not inf)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # false for nan as well
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low:,g} to {high:,g}")
        return value
    return parse


def positive_int_at_most(most: int) -> Callable[[str], int]:
    """argparse type: an integer above 0 and at most MOST."""
    return _at_most(positive_int, most)


def whole_number_at_most(most: int) -> Callable[[str], int]:
    """argparse type: an integer from 0 to MOST."""
    return _at_most(whole_number_at_least(0), most)


def _at_most(first: Callable[[str], int], most: int) -> Callable[[str], int]:
    """FIRST's integer, refused above MOST."""
    def parse(text: str) -> int:
        value = first(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{value} is more than {most}, the most allowed")
        return value
    return parse


def whole_number_at_least(least: int) -> Callable[[str], int]:
    """argparse type: an integer of at least LEAST."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        return value
    return parse


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
    p.add_argument("--customers", type=positive_int_at_most(5_000_000), default=customers,
                   help=f"number of customers (default {customers}, at most 5,000,000)")
    p.add_argument("--days", type=positive_int_at_most(36_500), default=days, help=f"days of history (default {days})")
    p.add_argument("--seed", type=whole_number_at_least(0), default=7, help="random seed, 0 or more (default 7)")
    when_ = p.add_mutually_exclusive_group()
    when_.add_argument("--end", default=None, metavar="DATE|now",
                       help="the moment the world ends, YYYY-MM-DD[THH:MM:SS] UTC (default now: the world's last "
                            "day is today, so the online features read as of now agree with its history)")
    when_.add_argument("--start", default=None, metavar="DATE",
                       help="the first day instead, YYYY-MM-DD (a world in the past, e.g. 2025-01-01)")


def world_config(args: argparse.Namespace, **options: Any) -> Any:
    """The WorldConfig of `world_options`: from --start, or ending at --end (now by default; never in the future)."""
    from training.datasets.synthetic import WorldConfig, check

    if args.start is not None:
        config = WorldConfig(customers=args.customers, days=args.days, seed=args.seed, start=args.start, **options)
    else:
        config = _ending(args, **options)
    try:
        check(config)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("start=", "--start ", 1)) from None
    if config.end_ts() > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):  # its later rows could never be ingested
        raise BadRequest(f"--start {args.start} and --days {args.days}: the world would end "
                         f"{config.end_ts():%Y-%m-%d}, in the future; ingest takes only times that have come")
    return config


def _ending(args: argparse.Namespace, **options: Any) -> Any:
    """The WorldConfig of a world ending at --end (now by default)."""
    from training.datasets.synthetic import WorldConfig

    now = dt.datetime.now(dt.UTC)
    try:
        end = now if args.end is None or args.end.strip().lower() == "now" else timestamp_value(args.end)
    except ValueError as exc:
        if "outside the years" in str(exc) and args.end.strip()[:4] > str(now.year):
            raise BadRequest(f"--end {args.end} is in the future: a world ends at the latest now") from None
        years = f" in the years {CLI_YEARS[0]} to {now.year}" if "outside the years" in str(exc) else ""
        raise BadRequest(f"--end {args.end!r} is not a date (YYYY-MM-DD), an ISO 8601 time or `now`{years}") from None
    if end > now + dt.timedelta(minutes=1):
        raise BadRequest(f"--end {args.end} is in the future: a world ends at the latest now")
    return WorldConfig.ending(end, args.days, customers=args.customers, seed=args.seed, **options)


def check_windows(args: argparse.Namespace) -> None:
    """BadRequest when `train`'s windows end before they start, or its label cutoff is in the future."""
    import pandas as pd

    for first, then, name in ((args.train_from, args.train_until, "--train-from ... --train-until"),
                              (args.test_from if args.test_from is not None else args.train_until, args.test_until,
                               "the test window (--test-from, or --train-until, ... --test-until)")):
        if first is not None and then is not None and then <= first:
            raise BadRequest(f"{name}: the window ends ({then.isoformat()}) before it starts ({first.isoformat()})")
    if args.train_until is not None and args.train_until > pd.Timestamp.now(tz="UTC"):
        raise BadRequest(f"--train-until {args.train_until.isoformat()} is in the future: the labels known then "
                         "are not known yet (leave it out, or `now`, for the latest)")


def writable_beside(out: Path) -> Path:
    """OUT, once a file could be made in its folder; BadRequest naming the folder and why not otherwise."""
    import tempfile

    if out.is_dir():
        raise BadRequest(f"--out {out} is a directory: name a file to write")
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise BadRequest(f"--out {out}: cannot write in {out.parent} ({exc.strerror or exc})") from None
    return out


def costs_from(args: argparse.Namespace) -> object:
    """The `training.thresholds.Costs` of the cost options (`--reviews-per-day` ...); BadRequest when they clash."""
    from training.thresholds import Costs

    try:
        return Costs(reviews_per_day=args.reviews_per_day, loss_per_fraud=args.loss_per_fraud,
                     review_cost=args.review_cost, inspection_cost=args.inspection_cost,
                     credit_friction=args.credit_friction, deny_friction=args.deny_friction,
                     max_friction=args.max_friction)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
