"""Signed checkpoints of the evidence chains: anchors that whoever can write the database cannot move.

The hash chain shows an edit to one event, but someone who can write the database can rewrite an
event and re-hash every later link, and the chain verifies again. A checkpoint is every chain's head
at a moment (the root's position and hash, the root's first hash, which names the log, and each
writer segment's position and hash), signed with an Ed25519 key that is kept outside the database.
Shipped to a place the database's writers cannot reach (see docs/security.md), checkpoints make a
rewrite visible: the rewritten chain's event at a checkpoint's position no longer has its hash.
Checkpoints taken before the log had segments (format 1: the root alone) still verify.

The signing key is a PEM file (made at the first checkpoint, readable by its owner only); its public
half sits beside it (`.pub`) and is all a verifier needs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fraud_service.data.files import not_regular
from fraud_service.errors import ConfigError
from fraud_service.store.chain import GENESIS, ROOT, canonical, open_segments
from fraud_service.store.schema import ChainHead, EvidenceEvent

log = logging.getLogger(__name__)

FORMAT = "fraud-service-checkpoint/2"
FORMATS = ("fraud-service-checkpoint/1", FORMAT)
SIGNED = {FORMATS[0]: ("format", "chain", "seq", "hash", "at"),
          FORMAT: ("format", "chain", "seq", "hash", "segments", "at")}
"""The fields a signature covers, by format, as canonical JSON."""


@dataclass(frozen=True)
class Checkpoint:
    chain: str  # the hash of the root chain's first event: which log this is
    seq: int  # the root chain's head: its position
    hash: str  # and its hash
    at: str  # when the checkpoint was taken (UTC, ISO 8601)
    signature: str = ""
    segments: dict[str, tuple[int, str]] = field(default_factory=dict)  # each segment's head: position, hash
    format: str = FORMAT

    def message(self) -> bytes:
        fields = {"format": self.format, "chain": self.chain, "seq": self.seq, "hash": self.hash, "at": self.at,
                  "segments": {c: list(h) for c, h in self.segments.items()}}
        return canonical({k: fields[k] for k in SIGNED[self.format]}).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "chain": self.chain, "seq": self.seq, "hash": self.hash, "at": self.at,
                **({"segments": {c: list(h) for c, h in self.segments.items()}} if self.format == FORMAT else {}),
                "signature": self.signature}


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The signing key at PATH, made (owner-only, with PATH.pub beside it) when there is none; and whether it
    was made now."""
    if path.exists():
        if not path.is_file():  # a FIFO or a device would never end (a link to a key file is followed)
            raise ConfigError(f"{path} is not a regular file: expected a PEM Ed25519 private key")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not a PEM Ed25519 private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        _mend_public_half(path, key)
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        public_path(path).write_bytes(_public_pem(key))
    except BaseException:  # a full disk: no half-written key (it would be refused) nor a key without its public half
        for made in (path, public_path(path)):
            with contextlib.suppress(OSError):
                made.unlink()
        raise
    return key, True


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _mend_public_half(path: Path, key: Ed25519PrivateKey) -> None:
    """Write PATH.pub again when it is missing, empty or no PEM public key (an earlier run stopped between the two
    files: verifying then failed with "not a PEM public key" for good). One holding another valid key is left alone:
    the verifier says it does not match."""
    public = public_path(path)
    try:
        serialization.load_pem_public_key(public.read_bytes())
        return
    except FileNotFoundError:
        pass
    except (ValueError, TypeError):  # empty, or no PEM public key: an earlier run's half-written file
        if not public.is_file():
            return  # not ours to replace
    except OSError:  # unreadable (permissions): not ours to judge
        return
    staged = public.with_name(f".{public.name}.tmp")
    try:
        staged.write_bytes(_public_pem(key))
        os.replace(staged, public)
    except OSError as exc:  # a key given on a read-only mount: the checkpoint is signed all the same
        with contextlib.suppress(OSError):
            staged.unlink()
        log.warning("could not write the checkpoint key's public half %s (%s): give verifiers a copy of it", public,
                    exc)


def public_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def load_public_key(path: Path) -> Ed25519PublicKey:
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file: expected a PEM public key")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no public key at {path} (give the checkpoint key's .pub with --public-key)") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def take(session: Session, key: Ed25519PrivateKey, now: dt.datetime) -> Checkpoint:
    """The signed checkpoint of every chain's head as SESSION sees them: the root's and each segment's still open (a
    closed segment's end is recorded by its `chain_closed` event on the root, which the root's hash covers)."""
    heads = {h.id: (int(h.seq), str(h.hash)) for h in session.execute(select(ChainHead)).scalars()}
    seq, last = heads.pop(ROOT, (0, GENESIS))
    still_open = open_segments(session)  # a closed one is anchored by its closing event on the root already
    heads = {c: h for c, h in heads.items() if c in still_open}
    unsigned = Checkpoint(chain=_first(session), seq=seq, hash=last, at=now.astimezone(dt.UTC).isoformat(),
                          segments={str(c): heads[c] for c in sorted(heads)})
    return replace(unsigned, signature=key.sign(unsigned.message()).hex())


def _first(session: Session) -> str:
    return session.execute(select(EvidenceEvent.hash).where(EvidenceEvent.chain == ROOT, EvidenceEvent.position == 1)
                           ).scalar() or GENESIS


def _at(session: Session, chain_id: int, position: int) -> str | None:
    return session.execute(select(EvidenceEvent.hash).where(EvidenceEvent.chain == chain_id,
                                                            EvidenceEvent.position == position)).scalar()


def write(checkpoint: Checkpoint, target: Path) -> Path:
    """Write CHECKPOINT to TARGET (a new file, or a directory to add one to) whole and synced; the file's path. A
    checkpoint never replaces anything: a TARGET that exists and is not a directory (an earlier checkpoint, a
    device) is refused (ConfigError), and in a directory a name already taken (two checkpoints in one second, or
    another writer's meanwhile) gets the next suffix."""
    text = json.dumps(checkpoint.to_dict(), indent=2) + "\n"
    if target.is_dir():
        stamp = checkpoint.at[:19].replace("-", "").replace(":", "")
        base = f"checkpoint-{checkpoint.seq:012d}-{stamp}"
        for n in itertools.count(1):
            try:
                return _create(target / (f"{base}.json" if n == 1 else f"{base}-{n}.json"), text)
            except FileExistsError:
                continue
    try:
        return _create(target, text)
    except FileExistsError:
        raise ConfigError(f"{target} already exists: a checkpoint never replaces a file; name a new file, or a "
                          "directory to add one to") from None


def _create(path: Path, text: str) -> Path:
    """PATH made with TEXT, synced, never replacing anything (FileExistsError when the name is taken): written
    beside it and linked into place, so it appears whole; on a filesystem without hard links (some network and
    FAT mounts) created in place with O_EXCL instead."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("x") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(partial, path)  # unlike a rename, never replaces what appeared at PATH meanwhile
        except FileExistsError:
            raise
        except OSError:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
    finally:
        partial.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


@dataclass(frozen=True)
class CheckpointCheck:
    checked: int
    problems: list[str]
    latest: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, paths: list[Path], public_key: Ed25519PublicKey) -> CheckpointCheck:
    """Check each checkpoint file: signed by PUBLIC_KEY, of this chain, and the stored event at its sequence
    number still has its hash (else the chain was rewritten or cut since it was taken)."""
    problems: list[str] = []
    good: list[Checkpoint] = []
    first = _first(session)
    stored = session.execute(select(func.max(EvidenceEvent.position)).where(EvidenceEvent.chain == ROOT)).scalar() or 0
    for path in paths:
        try:
            checkpoint = _read(path)
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        try:
            public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
        except (InvalidSignature, ValueError):
            problems.append(f"{path.name}: the signature does not match the public key (forged or edited)")
            continue
        if checkpoint.seq == 0:
            good.append(checkpoint)
            continue
        if checkpoint.chain != first:
            problems.append(f"{path.name}: taken of another chain (its first event hashes to "
                            f"{checkpoint.chain[:12]}, this one's to {first[:12]}), or event 1 was rewritten")
            continue
        if checkpoint.seq > stored:
            problems.append(f"{path.name}: names event {checkpoint.seq} (taken {checkpoint.at}), but the chain "
                            f"ends at event {stored}: events were removed")
            continue
        found = _at(session, ROOT, checkpoint.seq)
        if found != checkpoint.hash:
            problems.append(f"{path.name}: event {checkpoint.seq} hashed to {checkpoint.hash[:12]} when the "
                            f"checkpoint was taken ({checkpoint.at}) and hashes to {str(found)[:12]} now: the chain "
                            f"was rewritten at or before event {checkpoint.seq}")
            continue
        moved = _segments_moved(session, checkpoint)
        if moved:
            problems.extend(f"{path.name}: {problem}" for problem in moved)
            continue
        good.append(checkpoint)
    latest = max(good, key=lambda c: c.seq, default=None)
    return CheckpointCheck(len(paths), problems, latest)


def _segments_moved(session: Session, checkpoint: Checkpoint) -> list[str]:
    """How each writer segment's stored link at the checkpoint's position differs from the checkpoint's hash."""
    problems = []
    for name, (position, digest) in sorted(checkpoint.segments.items(), key=lambda item: int(item[0])):
        if position == 0:
            continue  # opened, nothing written yet: the root's chain_opened event anchors it
        found = _at(session, int(name), position)
        if found is None:
            problems.append(f"chain {name} held link {position} when the checkpoint was taken ({checkpoint.at}) "
                            "and no longer does: events were removed")
        elif found != digest:
            problems.append(f"chain {name}'s link {position} hashed to {digest[:12]} when the checkpoint was taken "
                            f"({checkpoint.at}) and hashes to {found[:12]} now: the chain was rewritten at or "
                            f"before it")
    return problems


MAX_BYTES = 1024 * 1024
"""A checkpoint file is a few kilobytes (a line per writer segment still open); anything past this is not one (and
is not read to its end)."""


def _read(path: Path) -> Checkpoint:
    problem = not_regular(path)  # shipped back from elsewhere: a link or a device is not followed
    if problem is not None:
        raise ValueError(f"{problem}; only regular files are read as checkpoints")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES:,} bytes: not a checkpoint")
        data = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a readable checkpoint ({exc})") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise ValueError(f"not a checkpoint (expected \"format\": \"{FORMAT}\")")
    try:
        segments = {str(c): (int(h[0]), str(h[1])) for c, h in dict(data.get("segments", {})).items()}
        checkpoint = Checkpoint(str(data["chain"]), int(data["seq"]), str(data["hash"]), str(data["at"]),
                                str(data["signature"]), segments, str(data["format"]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"a checkpoint field is missing or malformed ({exc})") from None
    return checkpoint
