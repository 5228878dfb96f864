"""The `users` commands: accounts of the people who sign in to the analyst UI."""

from __future__ import annotations

import argparse
import sys

from api.cli.common import Subparsers, cli_actor, when
from fraud_service.config import Settings


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a person's account for the analyst UI; the password is generated and printed unless given on stdin."""
    from fraud_service.access.users import create_user
    from fraud_service.bootstrap import evidence

    password = _password_given(args)
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
    print(f"{'name':<24} {'role':<8} {'totp':<5} {'created':<20} disabled")
    for u in users:
        print(f"{u.name:<24} {u.role:<8} {'on' if u.totp else 'off':<5} {when(u.created_at):<20} {when(u.disabled_at)}")
    return 0


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    """Disable a user (signed-in sessions end at their next request; the cases they hold go back to their queues)."""
    from fraud_service.bootstrap import evidence
    from fraud_service.cases.service import disable_user

    with evidence(settings) as db:
        released = disable_user(db.uow(), args.name, cli_actor())
    print(f"user {args.name} disabled" + (f"; {len(released):,} case(s) they held are unassigned: "
                                          f"{', '.join(released)}" if released else ""))
    return 0


def cmd_users_totp_reset(args: argparse.Namespace, settings: Settings) -> int:
    """Turn a person's two-factor sign-in off, for one who lost the device (an evidence event; ends their sessions)."""
    from fraud_service.access import totp
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        done = totp.reset(db.uow(), args.name, cli_actor())
    if not done:
        print(f"user {args.name} has no two-factor sign-in on or begun; nothing changed")
        return 0
    print(f"two-factor sign-in of {args.name} is off and their sessions have ended; they sign in with the password "
          "and turn it on again from the Two-factor page (an admin is sent there at once)")
    return 0


def cmd_users_set_password(args: argparse.Namespace, settings: Settings) -> int:
    """Give a person a new password (an evidence event without it); their sessions end."""
    from fraud_service.access.users import set_password
    from fraud_service.bootstrap import evidence

    password = _password_given(args)
    with evidence(settings) as db:
        password = set_password(db.uow(), args.name, password, cli_actor())
    if not args.password_stdin:
        print(password)
    print(f"{args.name} has a new password{'; the one above is shown only now' if not args.password_stdin else ''}; "
          "their signed-in sessions have ended", file=sys.stderr)
    return 0


def cmd_users_enable(args: argparse.Namespace, settings: Settings) -> int:
    """Let a disabled person sign in again (an evidence event)."""
    from fraud_service.access.users import enable_user
    from fraud_service.bootstrap import evidence

    with evidence(settings) as db:
        done = enable_user(db.uow(), args.name, cli_actor())
    print(f"user {args.name} is enabled again; they sign in anew" if done
          else f"user {args.name} is not disabled; nothing changed")
    return 0


def register(sub: Subparsers) -> None:
    """The `users` commands."""
    users = sub.add_parser("users", help="people who sign in to the analyst UI: create, list, set-password, "
                                         "disable, enable, totp-reset",
                           description="Accounts for the analyst UI (/ui/). Roles: analyst (works cases), admin\n"
                                       "(also everything admin keys may do). Passwords are kept as scrypt hashes.\n"
                                       "People turn two-factor sign-in (TOTP) on from the UI's Two-factor page;\n"
                                       "admins must, at their first sign-in.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    users.set_defaults(home="database")  # only the evidence database (`common.check_home`)
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    q = usub.add_parser("create", help="create a user; prints a generated password once")
    q.add_argument("name", metavar="NAME", help="user name: a-z, 0-9, '.', '_', '-'")
    q.add_argument("--role", default="analyst", choices=("analyst", "admin"), help="default analyst")
    _password_stdin(q)
    q.set_defaults(func=cmd_users_create)
    usub.add_parser("list", help="names, roles, two-factor sign-in on or off, creation and disabling times"
                    ).set_defaults(func=cmd_users_list)
    q = usub.add_parser("disable", help="disable a user")
    q.add_argument("name", metavar="NAME", help="the user's name")
    q.set_defaults(func=cmd_users_disable)
    q = usub.add_parser("set-password", help="give a person a new password (printed once unless given on stdin); "
                                             "ends their sessions and forgets their failed sign-ins")
    q.add_argument("name", metavar="NAME", help="the user's name")
    _password_stdin(q)
    q.set_defaults(func=cmd_users_set_password)
    q = usub.add_parser("enable", help="let a disabled person sign in again (their old sessions stay ended)")
    q.add_argument("name", metavar="NAME", help="the user's name")
    q.set_defaults(func=cmd_users_enable)
    q = usub.add_parser("totp-reset", help="turn a person's two-factor sign-in off (a lost device) and end their "
                                           "sessions; they turn it on again at the next sign-in")
    q.add_argument("name", metavar="NAME", help="the user's name")
    q.set_defaults(func=cmd_users_totp_reset)


def _password_given(args: argparse.Namespace) -> str | None:
    """The first line of stdin with --password-stdin (without its line end), else None: one is generated."""
    return sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password (at least 10 characters, not all blank) from the first line of stdin")
