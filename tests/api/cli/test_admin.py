"""`fraud-service db upgrade`, `keys create|list|revoke`, `users`, `labels sync` and `evidence verify` on a real
SQLite evidence database."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from fraud_service.access.keys import authenticate
from fraud_service.access.users import Person, sign_in
from fraud_service.bootstrap import database
from fraud_service.config import Settings
from fraud_service.store.uow import UnitOfWork

Cli = Callable[..., tuple[int, str, str]]


def test_keys_need_the_schema_first(cli: Cli) -> None:
    code, _, err = cli("keys", "list")
    assert code == 1 and "fraud-service db upgrade" in err


def test_keys_made_without_a_name_are_each_a_client_of_their_own(cli: Cli, settings: Settings) -> None:
    """Both were named "scoring key": scoring keys of one name share their assessments, so each read the other's."""
    assert cli("db", "upgrade")[0] == 0
    keys = [cli("keys", "create", "--role", "scoring")[1].strip() for _ in range(2)]
    engine, sessions = database(settings)
    try:
        names = [authenticate(UnitOfWork(sessions), key).name for key in keys]  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert names == [f"scoring key {key.split('_')[1]}" for key in keys]  # named after their own ids
    assert "share the name" not in cli("keys", "list")[2]
    shared = [cli("keys", "create", "--role", "scoring", "--name", "returns-eu")[1].strip() for _ in range(2)]
    ids = [key.split("_")[1] for key in shared]
    code, _, err = cli("keys", "list")
    note = next(line for line in err.splitlines() if "share the name 'returns-eu'" in line)
    assert code == 0 and all(i in note.split(" share")[0] for i in ids) and names[0] not in note


def test_db_upgrade_keys_and_verify(cli: Cli, settings: Settings) -> None:
    code, out, _ = cli("db", "upgrade")
    assert code == 0 and "upgraded from empty" in out
    assert "already at schema" in cli("db", "upgrade")[1]

    code, out, err = cli("keys", "create", "--role", "analyst", "--name", "alice")
    assert code == 0 and "shown only now" in err
    key = out.strip()
    assert key.startswith("fsk_")
    engine, sessions = database(settings)
    try:
        with sessions() as session:
            principal = authenticate(UnitOfWork(sessions), key)
            assert principal is not None and principal.role == "analyst" and principal.name == "alice"
            stored = session.execute(text("SELECT secret_hash FROM api_keys")).scalar_one()
            assert key not in stored  # only the hash is kept
        listed = cli("keys", "list")[1]
        assert principal.key_id in listed and "alice" in listed and "fsk_" not in listed

        assert cli("keys", "revoke", principal.key_id)[0] == 0
        assert authenticate(UnitOfWork(sessions), key) is None
        assert cli("keys", "revoke", "nope")[0] == 1
        assert cli("keys", "create", "--role", "root")[0] == 2  # argparse names the allowed roles

        code, out, _ = cli("evidence", "verify")
        assert code == 0 and "intact: 2 events" in out  # key created, key revoked

        with engine.begin() as connection:
            connection.execute(text("UPDATE evidence_events SET actor = 'someone else' WHERE seq = 1"))
        code, out, _ = cli("evidence", "verify")
        assert code == 1 and "BROKEN at event 1" in out and "changed after it was written" in out
    finally:
        engine.dispose()


def _verify_read_only(home: Path) -> subprocess.CompletedProcess[str]:
    """`evidence verify` on HOME, a folder nothing may be written to: mounted read-only in a mount namespace of its
    own when this runs as root (root writes through file modes), else by its modes."""
    verify = [sys.executable, "-m", "api.cli", "evidence", "verify"]
    env = {**os.environ, "FRAUD_HOME": str(home)}
    if os.geteuid() != 0:
        home.chmod(0o555)
        try:
            return subprocess.run(verify, env=env, capture_output=True, text=True, timeout=120)
        finally:
            home.chmod(0o755)
    script = ('mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && ! touch "$1/probe" 2>/dev/null '
              '&& shift && exec "$@"')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(home), *verify], env=env,
                          capture_output=True, text=True, timeout=120)


def test_verify_reads_a_copy_in_a_folder_nothing_may_be_written_to(cli: Cli, settings: Settings,
                                                                   tmp_path: Path) -> None:
    """An auditor's read-only copy of a home: verify failed, making SQLite's lock file there. A copy with its
    write-ahead log is read with it (its latest commits are there, not in the database file)."""
    assert cli("db", "upgrade")[0] == 0
    cli("keys", "create", "--role", "scoring")
    database_file = settings.sqlite_file
    assert database_file is not None
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(database_file, clean / "fraud.db")
    held = sqlite3.connect(database_file)  # another reader keeps the log from being folded in at the last close
    try:
        held.execute("PRAGMA wal_autocheckpoint=0")
        held.execute("SELECT count(*) FROM evidence_events").fetchone()
        cli("keys", "create", "--role", "analyst")
        logged = tmp_path / "logged"
        logged.mkdir()
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(f"{database_file}{suffix}", logged / f"fraud.db{suffix}")
    finally:
        held.close()
    assert (logged / "fraud.db-wal").stat().st_size > 0
    for home, events in ((clean, 1), (logged, 2)):
        before = sorted(p.name for p in home.iterdir())
        done = _verify_read_only(home)
        assert done.returncode == 0 and f"intact: {events} event" in done.stdout, (done.stdout, done.stderr)
        assert sorted(p.name for p in home.iterdir()) == before
    (logged / "fraud.db-shm").unlink()  # the log without its index: SQLite cannot read it here, and says only
    done = _verify_read_only(logged)    # "unable to open database file"
    assert done.returncode == 1 and "has its write-ahead log (fraud.db-wal) beside it but not the log's index " \
        "(fraud.db-shm)" in done.stderr, (done.stdout, done.stderr)


def test_verify_detects_a_deleted_last_event(cli: Cli, settings: Settings) -> None:
    cli("db", "upgrade")
    for role in ("scoring", "admin"):
        cli("keys", "create", "--role", role)
    engine, _ = database(settings)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM evidence_events WHERE seq = 2"))
    finally:
        engine.dispose()
    code, out, _ = cli("evidence", "verify")
    assert code == 1 and "removed from the end" in out


def test_users_create_list_disable(cli: Cli, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("db", "upgrade")[0] == 0
    code, out, err = cli("users", "create", "dana")
    assert code == 0 and "shown only now" in err
    password = out.strip()
    monkeypatch.setattr("sys.stdin", io.StringIO("a chosen password\n"))
    assert cli("users", "create", "erik", "--role", "admin", "--password-stdin")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = cli("users", "create", "fay", "--password-stdin")
    assert code == 1 and "at least 10 are required" in err
    code, _, err = cli("users", "create", "dana")
    assert code == 1 and "already exists" in err
    listed = cli("users", "list")[1]
    assert "dana" in listed and "erik" in listed and "admin" in listed and password not in listed
    engine, sessions = database(settings)
    try:
        assert sign_in(UnitOfWork(sessions), "dana", password) == Person("dana", "analyst")
        assert sign_in(UnitOfWork(sessions), "erik", "a chosen password") == Person("erik", "admin")
        assert cli("users", "disable", "dana")[0] == 0
        assert sign_in(UnitOfWork(sessions), "dana", password) is None
        assert cli("users", "disable", "nobody")[0] == 1
        code, _, err = cli("users", "set-password", "dana")
        assert code == 1 and "is disabled: `fraud-service users enable dana` first" in err
        code, out, _ = cli("users", "enable", "dana")
        assert code == 0 and "enabled again" in out and sign_in(UnitOfWork(sessions), "dana", password) is not None
        assert "nothing changed" in cli("users", "enable", "dana")[1]
        code, out, err = cli("users", "set-password", "dana")
        assert code == 0 and "shown only now" in err and out.strip() != password
        assert sign_in(UnitOfWork(sessions), "dana", out.strip()) == Person("dana", "analyst")
        assert sign_in(UnitOfWork(sessions), "dana", password) is None
        monkeypatch.setattr("sys.stdin", io.StringIO("another chosen one\r\n"))
        assert cli("users", "set-password", "erik", "--password-stdin") == (
            0, "", "erik has a new password; their signed-in sessions have ended\n")
        assert sign_in(UnitOfWork(sessions), "erik", "another chosen one") == Person("erik", "admin")
    finally:
        engine.dispose()


def test_users_totp_reset_turns_a_lost_device_off_and_list_shows_who_has_it(cli: Cli, settings: Settings) -> None:
    import pyotp

    from fraud_service.access import totp

    assert cli("db", "upgrade")[0] == 0
    assert cli("users", "create", "gus", "--role", "admin")[0] == 0
    assert cli("users", "create", "hal")[0] == 0
    engine, sessions = database(settings)
    try:
        key = b"the app's key"
        secret = totp.begin(UnitOfWork(sessions), "gus", key).secret
        codes = totp.confirm(UnitOfWork(sessions), "gus", pyotp.TOTP(secret).now(), key)
        rows = {line.split()[0]: line.split()[2] for line in cli("users", "list")[1].splitlines()[1:]}
        assert rows == {"gus": "on", "hal": "off"}

        code, out, _ = cli("users", "totp-reset", "gus")
        assert code == 0 and "two-factor sign-in of gus is off" in out
        assert totp.sign_in_code(UnitOfWork(sessions), "gus", codes[0], key) is None  # its recovery codes went too
        assert "gus      " in cli("users", "list")[1] and " on " not in cli("users", "list")[1]
        code, out, _ = cli("users", "totp-reset", "hal")
        assert code == 0 and "nothing changed" in out
        code, _, err = cli("users", "totp-reset", "nobody")
        assert code == 1 and "no user 'nobody'" in err
        with sessions() as session:
            reset = session.execute(text("SELECT actor, payload FROM evidence_events WHERE kind = 'totp_reset'")).all()
        assert len(reset) == 1 and reset[0][0].startswith("cli:") and '"name":"gus"' in reset[0][1]
    finally:
        engine.dispose()
    assert cli("evidence", "verify")[0] == 0


def test_labels_sync_without_an_evidence_database_copies_nothing(cli: Cli, settings: Settings) -> None:
    code, out, _ = cli("labels", "sync")
    assert code == 0 and "labels:" not in out
    assert not (settings.home / "fraud.db").exists()  # nothing created by looking
    assert cli("db", "upgrade")[0] == 0
    code, out, _ = cli("labels", "sync")
    assert code == 0 and "no label or inspection needed copying" in out


def test_lists_add_list_remove_with_evidence(cli: Cli, settings: Settings) -> None:
    assert cli("db", "upgrade")[0] == 0
    assert "lists are empty" in cli("lists", "list")[1]
    code, out, err = cli("lists", "add", "device", "dev-42", "--list", "block", "--reason", "chargeback ring")
    assert code == 0, err
    assert "device dev-42 is on the block list (chargeback ring)" in out
    code, _, err = cli("lists", "add", "device", "dev-42", "--list", "allow", "--reason", "kiosk")
    assert code == 1 and "device dev-42 is already on a list; delete it first" in err
    listed = cli("lists", "list")[1]
    assert "dev-42" in listed and "block" in listed and "chargeback ring" in listed and "cli:" in listed
    code, _, err = cli("lists", "add", "device", "dev-43", "--list", "block", "--reason", " ")
    assert code == 1 and "reason" in err
    # the API refused it; the command line took it, and `lists list` showed "ring original"
    code, _, err = cli("lists", "add", "device", "dev-43", "--list", "block", "--reason", "ring \u202elanigiro")
    assert code == 1 and "reason: holds a character that reorders how it shows: U+202E" in err, err
    assert cli("lists", "add", "planet", "x", "--list", "block", "--reason", "r")[0] == 2  # argparse names the choices
    assert cli("lists", "remove", "device", "dev-42")[1].strip() == "device dev-42 is off the block list"
    code, _, err = cli("lists", "remove", "device", "dev-42")
    assert code == 1 and "device dev-42 is on no list" in err
    engine, sessions = database(settings)
    try:
        with sessions() as session:
            kinds = session.execute(text("SELECT kind, subject FROM evidence_events ORDER BY seq")).all()
    finally:
        engine.dispose()
    assert [tuple(k) for k in kinds] == [("list_added", "device:dev-42"), ("list_removed", "device:dev-42")]
    assert cli("evidence", "verify")[0] == 0


def test_evidence_checkpoint_then_verify_finds_a_rewritten_chain(cli: Cli, settings: Settings, tmp_path) -> None:
    from fraud_service.store import chain

    assert cli("db", "upgrade")[0] == 0
    for name in ("a", "b", "c"):
        assert cli("keys", "create", "--role", "scoring", "--name", name)[0] == 0
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    code, out, err = cli("evidence", "checkpoint", "--out", str(shipped))
    assert code == 0 and "checkpoint of event 3" in out and "made the checkpoint signing key" in err
    code, out, _ = cli("evidence", "verify", "--checkpoints", str(shipped))
    assert code == 0 and "checkpoints agree: 1 signed checkpoint(s)" in out and "event 3" in out

    engine, _ = database(settings)
    try:  # rename key "b" in event 2 and re-hash every later link and the head: the chain alone still verifies
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT seq, at, kind, subject, actor, payload FROM evidence_events "
                                           "ORDER BY seq")).all()
            previous = chain.GENESIS
            for row in rows:
                payload = row.payload.replace('"b"', '"renamed"') if row.seq == 2 else row.payload
                at = chain.aware(row.at if isinstance(row.at, dt.datetime) else dt.datetime.fromisoformat(row.at))
                digest = chain.link_hash(previous, row.seq, at, row.kind, row.subject, row.actor, payload)
                connection.execute(text("UPDATE evidence_events SET payload = :p, prev_hash = :prev, hash = :h "
                                        "WHERE seq = :s"), {"p": payload, "prev": previous, "h": digest, "s": row.seq})
                previous = digest
            connection.execute(text("UPDATE chain_head SET hash = :h"), {"h": previous})
    finally:
        engine.dispose()
    assert "intact: 3 events" in cli("evidence", "verify")[1]
    code, out, _ = cli("evidence", "verify", "--checkpoints", str(shipped))
    assert code == 1 and "checkpoints DISAGREE (1 of 1)" in out and "rewritten at or before event 3" in out
    code, _, err = cli("evidence", "verify", "--checkpoints", str(shipped), "--public-key", str(tmp_path / "no.pub"))
    assert code != 0 and "no public key at" in err


def test_serve_refuses_an_analyst_port_that_is_the_main_port(cli: Cli) -> None:
    code, _, err = cli("serve", "--port", "8123", "--analyst-port", "8123")
    assert code == 1 and "the analyst port must be another TCP port than 8123" in err
    code, _, err = cli("serve", "--port", "65535")  # the default, the main port + 1, does not exist
    assert code == 1 and "got 65536" in err


def test_a_checkpoint_out_ending_in_a_slash_is_a_directory_made_once_and_added_to(cli: Cli, tmp_path) -> None:
    """The cron line's first run wrote a file named like the directory, and every later run was refused."""
    assert cli("db", "upgrade")[0] == 0
    target = tmp_path / "cron" / "checkpoints"
    for _ in range(2):
        code, _, err = cli("evidence", "checkpoint", "--out", f"{target}/")
        assert code == 0, err
    assert target.is_dir() and len(list(target.glob("checkpoint-*.json"))) == 2
    code, _, err = cli("evidence", "checkpoint", "--out", str(tmp_path / "missing" / "one.json"))
    assert code == 1 and "does not exist (end --out with / to make it a directory" in err


def test_a_key_name_with_terminal_escapes_or_control_characters_is_refused(cli: Cli) -> None:
    """`keys list` printed the name raw: `\\e[2J` cleared an administrator's terminal."""
    assert cli("db", "upgrade")[0] == 0
    for name in ("\x1b[2J\x1b[1;31mFAKE", "shop\u202e", " padded", "x" * 201):
        code, _, err = cli("keys", "create", "--role", "metrics", "--name", name)
        assert code == 1 and "without control or invisible characters" in err, name
    code, out, _ = cli("keys", "list")
    assert code == 0 and "\x1b" not in out


@pytest.mark.parametrize(("args", "message"), [
    # a key (even one that does not exist) with no checkpoints was ignored: "intact", exit 0, no signature checked
    (["--public-key", "/nowhere/key.pub"], "--public-key /nowhere/key.pub checks the signatures of checkpoints: "
                                           "give the checkpoints too"),
    (["--bundle", "case.zip", "--checkpoints", "ckpt"], "--bundle is checked offline, on its own; --checkpoints "
                                                        "are for checking the evidence database"),
    (["--bundle", "case.zip", "--checkpoints", "ckpt", "--public-key", "k.pub"],
     "--bundle is checked offline, on its own; --checkpoints and --public-key are for"),
])
def test_verify_refuses_options_it_would_ignore(cli: Cli, args: list[str], message: str) -> None:
    assert cli("db", "upgrade")[0] == 0
    code, out, err = cli("evidence", "verify", *args)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {message}")


def test_users_create_refuses_a_password_of_only_spaces(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("db", "upgrade")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(" " * 10 + "\n"))
    code, out, err = cli("users", "create", "spacey", "--password-stdin")
    assert (code, out) == (1, "")
    assert err == ("error: the password is only blank characters (spaces, tabs or invisible ones): expected at least "
                   "10 characters, not all of them blank (letters, digits, punctuation)\n")
    assert "spacey" not in cli("users", "list")[1]


QUEUE = ["queues", "set", "inr", "--sla-hours", "24", "--cap", "5"]


@pytest.mark.parametrize(("args", "message"), [
    # a repeated filter option kept its last value and dropped the first, without a word
    (["--decision", "review", "--decision", "deny"],
     "fraud-service queues set: error: argument --decision: given twice (--decision, then --decision); it takes "
     "one value"),
    (["--return-type", "item_not_received", "--return-type", "wrong_item"],
     "argument --return-type: given twice (--return-type, then --return-type)"),
    (["--reason", "size", "--reason", "damaged"],
     "argument --reason: given twice (--reason, then --reason)"),
    # an unknown return type was refused by the core naming only the value, not what it takes
    (["--return-type", "stolen"], "argument --return-type: invalid choice: 'stolen' (choose from 'return', "
                                  "'item_not_received', 'damaged_on_arrival', 'wrong_item')"),
    # an unknown filter was named by the root parser, whose usage lists COMMAND only
    (["--channel", "web"], "fraud-service queues set: error: unrecognized arguments: --channel web"),
], ids=["decision twice", "return type twice", "reason twice", "unknown return type", "unknown filter"])
def test_queues_set_refuses_a_filter_it_would_drop_or_not_understand(cli: Cli, args: list[str], message: str) -> None:
    assert cli("db", "upgrade")[0] == 0
    code, out, err = cli(*QUEUE, *args)
    assert (code, out) == (2, "")
    assert message in err
    assert "[--decision {review,deny}] [--reason REASON]" in err  # the usage lists the filters it takes
    assert cli("queues", "list")[1].startswith("no named queues")


def test_a_refused_queue_names_each_bad_field_with_what_was_expected(cli: Cli) -> None:
    assert cli("db", "upgrade")[0] == 0
    code, _, err = cli(*QUEUE, "--reason", "")
    assert code == 1
    assert err == ("error: 1 invalid field(s): filter.reason: got '', expected a reason code of 1-80 characters: "
                   "text without NUL characters or lone surrogates\n")
    code, out, _ = cli(*QUEUE, "--return-type", "item_not_received", "--decision", "review")
    assert code == 0 and out.startswith("queue inr saved")
    assert '"decision": "review", "return_type": "item_not_received"' in cli("queues", "list")[1]


def test_db_upgrade_refuses_an_in_memory_database(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_DATABASE_URL", "sqlite://")
    code, out, err = cli("db", "upgrade")
    assert (code, out) == (1, "")
    assert err.startswith("error: FRAUD_DATABASE_URL=sqlite://: an in-memory SQLite database lasts as long as the "
                          "process that opened it, so `db upgrade` would migrate a database that is gone when it ends")
