"""Signed checkpoints anchor the chain: a rewrite that re-hashes every later link still verifies as a chain, but
no longer matches a checkpoint taken before it; forged, edited and foreign checkpoints are named."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from fraud_service.errors import ConfigError
from fraud_service.health import verify_checkpoints, write_checkpoint
from fraud_service.store import chain, checkpoint
from fraud_service.store.schema import ChainHead, EvidenceEvent
from tests.factories import MemoryDb, memory_db

T0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)


def _append(db: MemoryDb, n: int, actor: str = "user:ann") -> None:
    with db.sessions() as session, session.begin():
        for i in range(n):
            chain.append(session, kind="note", subject=f"case-{i}", actor=actor, payload={"i": i},
                         at=T0 + dt.timedelta(minutes=i))


def _rewrite_from(db: MemoryDb, seq: int, payload: str) -> None:
    """What someone who can write the database can do: change event SEQ and re-hash it and every later link."""
    with db.sessions() as session, session.begin():
        events = session.execute(select(EvidenceEvent).where(EvidenceEvent.seq >= seq)
                                 .order_by(EvidenceEvent.seq)).scalars().all()
        previous = session.get(EvidenceEvent, seq - 1).hash if seq > 1 else chain.GENESIS
        for event in events:
            if event.seq == seq:
                event.payload = payload
            event.prev_hash = previous
            event.hash = chain.link_hash(previous, event.seq, event.at, event.kind, event.subject, event.actor,
                                         event.payload)
            previous = event.hash
        session.get(ChainHead, 1).hash = previous


def test_a_checkpoint_matches_until_the_chain_is_rewritten(tmp_path: Path) -> None:
    key, out = tmp_path / "keys" / "signing.pem", tmp_path / "checkpoints"
    out.mkdir()
    with memory_db() as db:
        _append(db, 5)
        path, taken, made = write_checkpoint(db.uow(), key, out, T0 + dt.timedelta(hours=1))
        assert made and (key.stat().st_mode & 0o777) == 0o600 and checkpoint.public_path(key).exists()
        assert (taken.seq, path.parent) == (5, out) and json.loads(path.read_text())["seq"] == 5
        _append(db, 2)  # the chain grows past the checkpoint: still agrees
        check = verify_checkpoints(db.uow(), out, checkpoint.public_path(key))
        assert check.ok and check.checked == 1 and check.latest == taken

        _rewrite_from(db, 3, '{"i":"rewritten"}')
        with db.sessions() as session:
            assert chain.verify(session).ok  # the rewritten chain verifies on its own
        check = verify_checkpoints(db.uow(), out, checkpoint.public_path(key))
        with db.sessions() as session:
            now = session.get(EvidenceEvent, 5).hash
    assert now != taken.hash
    assert check.problems == [f"{path.name}: event 5 hashed to {taken.hash[:12]} when the checkpoint was taken "
                              f"({taken.at}) and hashes to {now[:12]} now: the chain was rewritten at or before "
                              "event 5"]


def test_cut_forged_edited_and_foreign_checkpoints_are_named(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    with memory_db() as db:
        _append(db, 4)
        good, taken, _ = write_checkpoint(db.uow(), key, tmp_path / "good.json", T0)
        forged = checkpoint.Checkpoint(taken.chain, 4, "f" * 64, taken.at)
        forged = checkpoint.Checkpoint(forged.chain, 4, forged.hash, forged.at,
                                       Ed25519PrivateKey.generate().sign(forged.message()).hex())
        checkpoint.write(forged, tmp_path / "forged.json")
        edited = json.loads(good.read_text()) | {"seq": 3}
        (tmp_path / "edited.json").write_text(json.dumps(edited))
        (tmp_path / "junk.json").write_text("{not json")
        public = checkpoint.public_path(key)
        check = verify_checkpoints(db.uow(), tmp_path, public)
        assert check.checked == 4 and check.latest == taken
        assert sorted(p.split(":")[0] for p in check.problems) == ["edited.json", "forged.json", "junk.json"]
        assert all("signature does not match" in p for p in check.problems if not p.startswith("junk"))

        with db.sessions() as session, session.begin():  # events removed from the end, and the head moved back
            for seq in (3, 4):
                session.delete(session.get(EvidenceEvent, seq))
            head = session.get(ChainHead, 1)
            head.seq, head.hash = 2, session.get(EvidenceEvent, 2).hash
        cut = verify_checkpoints(db.uow(), good, public)
        assert cut.problems == [f"good.json: names event 4 (taken {taken.at}), but the chain ends at event 2: "
                                "events were removed"]
    with memory_db() as other:  # a checkpoint of another chain
        _append(other, 4, actor="user:bob")
        foreign = verify_checkpoints(other.uow(), good, public)
        assert len(foreign.problems) == 1 and "taken of another chain" in foreign.problems[0]


def test_keys_and_directories_that_are_not_what_they_should_be(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with memory_db() as db:
        with pytest.raises(ConfigError, match="is not a PEM Ed25519 private key"):
            write_checkpoint(db.uow(), tmp_path / "bad.pem", tmp_path / "c.json", T0)
        (tmp_path / "empty").mkdir()
        with pytest.raises(ConfigError, match="holds no checkpoint files"):
            verify_checkpoints(db.uow(), tmp_path / "empty", tmp_path / "missing.pub")
        write_checkpoint(db.uow(), tmp_path / "k.pem", tmp_path / "c.json", T0)
        with pytest.raises(ConfigError, match="no public key at"):
            verify_checkpoints(db.uow(), tmp_path / "c.json", tmp_path / "missing.pub")


def test_links_devices_and_oversized_files_are_named_not_read(tmp_path: Path) -> None:
    """A checkpoint directory shipped back from elsewhere: a link to /dev/zero, a FIFO or a huge file would
    hang or exhaust the reader; each is refused by name, and a FIFO as a key is refused too."""
    import os

    key, shipped = tmp_path / "signing.pem", tmp_path / "shipped"
    shipped.mkdir()
    with memory_db() as db:
        _append(db, 2)
        write_checkpoint(db.uow(), key, shipped, T0)
        (shipped / "zero.json").symlink_to("/dev/zero")
        os.mkfifo(shipped / "pipe.json")
        (shipped / "huge.json").write_bytes(b" " * (checkpoint.MAX_BYTES + 1))
        check = verify_checkpoints(db.uow(), shipped, checkpoint.public_path(key))
        os.mkfifo(tmp_path / "fifo.pem")
        with pytest.raises(ConfigError, match="is not a regular file"):
            write_checkpoint(db.uow(), tmp_path / "fifo.pem", tmp_path / "c.json", T0)
        with pytest.raises(ConfigError, match="is not a regular file"):
            verify_checkpoints(db.uow(), shipped, tmp_path / "fifo.pem")
    assert check.checked == 4 and check.latest is not None and sorted(check.problems) == [
        f"huge.json: over {checkpoint.MAX_BYTES:,} bytes: not a checkpoint",
        "pipe.json: is not a regular file; only regular files are read as checkpoints",
        "zero.json: is a symbolic link (to /dev/zero); only regular files are read as checkpoints"]


def test_a_checkpoint_never_replaces_a_file_and_takes_a_free_name_in_a_directory(tmp_path: Path) -> None:
    """`--out` naming an earlier checkpoint (or a device) replaced it; now it is refused and nothing changes. Two
    checkpoints of one head in one second both land in a directory, and no partial file is left behind."""
    key = tmp_path / "signing.pem"
    out = tmp_path / "out"
    out.mkdir()
    with memory_db() as db:
        _append(db, 3)
        first, taken, _ = write_checkpoint(db.uow(), key, out / "kept.json", T0)
        before = first.read_bytes()
        with pytest.raises(ConfigError, match="already exists: a checkpoint never replaces a file"):
            write_checkpoint(db.uow(), key, first, T0)
        assert first.read_bytes() == before
        one = checkpoint.write(taken, out)
        two = checkpoint.write(taken, out)
        assert one != two and two.name == one.name.replace(".json", "-2.json")
        assert json.loads(one.read_text()) == json.loads(two.read_text()) == taken.to_dict()
        assert sorted(p.name for p in out.iterdir()) == sorted(["kept.json", one.name, two.name])


def test_a_signing_key_left_without_its_public_half_gets_it_back(tmp_path: Path, monkeypatch) -> None:
    """The first checkpoint on a full disk wrote the private key and an empty `.pub`; every later checkpoint loaded
    the key and left the `.pub` as it was, so `evidence verify --checkpoints` failed for good ("not a PEM public
    key"; a helper's probe). A key made part-way is not left behind either."""
    import errno

    path = tmp_path / "checkpoint-key.pem"
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".pub"):
            real(self, b"")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space"):
        checkpoint.load_or_create_key(path)
    monkeypatch.undo()
    assert not path.exists() and not checkpoint.public_path(path).exists()  # all or nothing

    key, made = checkpoint.load_or_create_key(path)
    assert made
    checkpoint.public_path(path).write_bytes(b"")  # as an older version left it
    again, made = checkpoint.load_or_create_key(path)
    assert not made
    public = checkpoint.load_public_key(checkpoint.public_path(path))
    assert public.public_bytes_raw() == key.public_key().public_bytes_raw() == again.public_key().public_bytes_raw()
    other = Ed25519PrivateKey.generate().public_key()  # another valid key there is the verifier's to refuse
    checkpoint.public_path(path).write_bytes(other.public_bytes(
        checkpoint.serialization.Encoding.PEM, checkpoint.serialization.PublicFormat.SubjectPublicKeyInfo))
    checkpoint.load_or_create_key(path)
    assert checkpoint.load_public_key(checkpoint.public_path(path)).public_bytes_raw() == other.public_bytes_raw()

    # a key given alone on a read-only mount (its .pub handed to verifiers elsewhere) still signs
    checkpoint.public_path(path).unlink()

    def read_only(self, data):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", read_only)
    signing, made = checkpoint.load_or_create_key(path)
    monkeypatch.undo()
    assert not made and signing.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-key.pem"]  # no .tmp left
