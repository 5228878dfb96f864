"""The `fraud-service` command line: the root parser and exit codes; each audience's module registers its own
subcommands (data.py, modeling.py, admin.py, queues.py, evidence.py, demo.py). A face over the core services and
over `training`.

Heavy libraries are imported inside the commands, so `--help` answers at once. The audiences' modules are imported
when the parser is built, inside `main`, not when this module is: a Ctrl-C during that start (pandas is imported
there) is one line and exit 130, not a traceback from the console script's import.
Exit codes: 0 success, 1 the input was rejected (validation, missing data), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in `main`, where a Ctrl-C is caught (this module is the console script's first import)
    from fraud_service.config import Settings
    from fraud_service.errors import FraudServiceError

EPILOG = """\
environment:
  FRAUD_HOME            data directory (default ./var); it must exist, but for ingest and demo, which set up a new one
  FRAUD_DATABASE_URL    evidence database (default sqlite:///$FRAUD_HOME/fraud.db; a file or PostgreSQL, not memory)
  FRAUD_ONLINE_STORE    sqlite (default) or redis
  FRAUD_REDIS_URL       redis://127.0.0.1:6379/0 by default
  FRAUD_HOST, FRAUD_PORT  where `serve` listens (127.0.0.1:8000)
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from api.cli import admin, data, demo, evidence, modeling, monitoring, queues, registry, returns, users, webhooks
    from api.cli.common import once_anywhere

    parser = argparse.ArgumentParser(
        prog="fraud-service",
        description="Catch fraud and abuse in e-commerce returns: ingest data, generate worlds, serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for audience in (data, demo, modeling, registry, monitoring, admin, users, queues, evidence, returns, webhooks):
        audience.register(sub)
    _quiet_anywhere(parser)
    once_anywhere(parser)
    return parser


def _quiet_anywhere(parser: argparse.ArgumentParser) -> None:
    """`-q` after the command too (`fraud-service features build -q`), not only before it: every subcommand takes
    it, with no default of its own, so one given before the command is not undone by one left out after it."""
    for action in parser._actions:  # argparse keeps its subcommands there; there is no public way to walk them
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("-q" in a.option_strings for a in child._actions):
                    child.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                       help="no progress lines on stderr (as `fraud-service -q COMMAND`)")
                _quiet_anywhere(child)


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ARGS chose (`queues set`'s, not the root's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _command_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def _said(exc: FraudServiceError) -> str:
    """EXC's message for a terminal: each invalid field with what was expected (the message alone leaves that to
    the HTTP answer's list of problems)."""
    from fraud_service.errors import RequestInvalid

    if isinstance(exc, RequestInvalid):
        return f"{len(exc.problems)} invalid field(s): " + "; ".join(
            f"{p.field}: {p.problem}, expected {p.expected}" for p in exc.problems)
    return str(exc)


def _where(settings: Settings | None) -> str:
    """The evidence database's address without credentials."""
    return "the evidence database" if settings is None else settings.database_url.split("@")[-1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fraud-service` console script."""
    try:
        parser = build_parser()  # imports every audience's module: most of a start's time
    except KeyboardInterrupt:
        return _interrupted(started=False)
    try:
        return _run(parser, argv)
    except KeyboardInterrupt:  # while parsing, before the command's own handler
        return _interrupted(started=False)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ARGV and run its command; the exit code (every failure one line on stderr)."""
    from api.cli.common import EXIT_REJECTED, check_home, given_options
    from fraud_service.config import Settings
    from fraud_service.errors import DatabaseDown, FraudServiceError

    args, unknown = parser.parse_known_args(argv)
    args.given = given_options(args)
    if unknown:  # said by the command's own parser, whose usage lists what it takes (the root's lists COMMAND only)
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    settings: Settings | None = None
    new_home: Path | None = None
    code = EXIT_REJECTED
    try:
        settings = Settings.from_env()
        note = check_home(args, settings)
        if note is not None:
            new_home = settings.home
            if not args.quiet:
                print(note, file=sys.stderr)
        code = int(args.func(args, settings))
        return code
    except FraudServiceError as exc:
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__
        detail = f" ({_where(settings)}: {cause})" if isinstance(exc, DatabaseDown) and cause is not None else ""
        print(f"error: {_said(exc)}{detail}", file=sys.stderr)
        return EXIT_REJECTED
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy") and settings is not None:  # the database failed
            print(f"error: the evidence database ({_where(settings)}) failed: {getattr(exc, 'orig', exc)}",
                  file=sys.stderr)
            return EXIT_REJECTED
        if type(exc).__name__ == "InterruptException" or str(exc) == "Query interrupted":  # DuckDB took the Ctrl-C
            return _interrupted()
        if (said := _disk_refused(exc)) is not None:  # a read-only or full disk, a folder not ours: no bug
            print(f"error: {args.command}: {said}; nothing was finished (run it again once that is mended)",
                  file=sys.stderr)
            return EXIT_REJECTED
        if isinstance(exc, BrokenPipeError):  # `fraud-service models list | head`: the reader has what it wanted
            with contextlib.suppress(OSError, ValueError):  # Python flushes stdout once more at exit: into nothing
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if os.environ.get("FRAUD_DEBUG"):
            raise
        # a failure no check foresaw: one line, and how to get the rest
        print(f"error: {args.command} failed unexpectedly ({type(exc).__name__}: "
              f"{(str(exc).splitlines() or [''])[0][:300]}); FRAUD_DEBUG=1 shows the traceback, which is worth "
              "reporting", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return _interrupted()
    finally:
        if new_home is not None and code != 0:
            _forget_new_home(new_home)


def _disk_refused(exc: BaseException) -> str | None:
    """What the disk refused, when EXC is the disk's refusal (read-only, full, over quota, not permitted), from the
    OS or from DuckDB's own file layer; else None. A helper's probe saw each said as an unexpected failure."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"the disk refused to write{where}: {exc.strerror}"
    text = str(exc)
    for words in ("No space left on device", "Read-only file system", "Permission denied", "Disk quota exceeded"):
        if words in text and type(exc).__module__.startswith(("duckdb", "sqlite3", "pyarrow")):
            return f"the disk refused to write: {words} ({text.splitlines()[0][:200]})"
    return None


def _forget_new_home(home: Path) -> None:
    """Remove HOME, made by a command that then failed, when it holds nothing but empty folders and lock files: a
    refused first ingest leaves no home behind, so the next command still says the path does not exist (a typo?)."""
    def kept(path: Path) -> bool:  # anything but a folder or a lock file (a link, a table, a special file)
        return path.is_symlink() or not (path.is_dir() or (path.is_file() and path.name.endswith("lock")))

    try:
        if not home.is_dir() or any(kept(path) for path in home.rglob("*")):
            return
        shutil.rmtree(home)
    except OSError:  # left as it is: nothing in it is lost either way
        return


def _interrupted(started: bool = True) -> int:
    if not started:
        print("interrupted before the command started: nothing was done", file=sys.stderr)
    else:
        print("interrupted; what was being written is not taken for finished (ingest, build and training publish "
              "their result only when done): run the command again", file=sys.stderr)
    return 130
