"""Exporting a bundle reads the case and records the export in one transaction: all of it, or nothing."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from fraud_service.cases import bundle
from fraud_service.store.schema import EvidenceEvent
from tests.factories import T0, flag, memory_db


def exports(db) -> list[str]:
    with db.sessions() as session:
        return list(session.execute(select(EvidenceEvent.payload)
                                    .where(EvidenceEvent.kind == "case_bundle_exported")).scalars())


def test_an_export_is_packaged_verified_and_recorded_with_its_digest(tmp_path: Path) -> None:
    with memory_db() as db:
        case_id = flag(db)["case_id"]
        done = bundle.export(db.uow(), case_id=case_id, actor="user:ana", warehouse_dir=tmp_path / "none", now=T0)
        with zipfile.ZipFile(io.BytesIO(done.archive)) as z:
            assert sorted(z.namelist()) == [f"{case_id}.html", f"{case_id}.json"]
            assert z.read(f"{case_id}.json") == done.data
            page = z.read(f"{case_id}.html").decode()
        assert page == bundle.html(json.loads(done.data), done.digest) and case_id in page
        assert bundle.verify(json.loads(done.data), done.data, page).ok
        [payload] = exports(db)
        heads = {c: p["head"]["position"] for c, p in done.bundle["proof"]["chains"].items()}
        assert json.loads(payload) == {"case_id": case_id, "sha256": done.digest, "heads": heads}
        assert len(heads) == 1 and "1" not in heads  # the flagged assessment and its case: on a writer's segment


def test_a_failed_rendering_records_no_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str:
        raise ValueError("template missing")

    monkeypatch.setattr(bundle, "html", broken)  # a fault injected into the page, after the case was read
    with memory_db() as db:
        case_id = flag(db)["case_id"]
        with pytest.raises(ValueError, match="template missing"):
            bundle.export(db.uow(), case_id=case_id, actor="user:ana", warehouse_dir=tmp_path)
        assert exports(db) == []


def test_a_device_or_fifo_named_as_a_bundle_is_refused_unread(tmp_path: Path) -> None:
    import os

    from fraud_service.errors import BundleError

    os.mkfifo(tmp_path / "bundle.zip")
    for path in (Path("/dev/zero"), tmp_path / "bundle.zip"):
        with pytest.raises(BundleError, match="is not a regular file"):
            bundle.read(path)


def test_a_zip_that_is_no_zip_damaged_or_a_bomb_is_named_as_such(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import zipfile

    from fraud_service.errors import BundleError

    (junk := tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(BundleError, match="junk.zip is not a zip archive"):
        bundle.read(junk)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("case.json", '{"format": 2}' + " " * 5000)
        z.writestr("case.html", "<p>page</p>")
    raw = bytearray(packed.getvalue())
    raw[60:80] = b"\xff" * 20  # inside case.json's compressed data: the directory still reads
    (damaged := tmp_path / "damaged.zip").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="damaged.zip is a damaged zip archive"):
        bundle.read(damaged)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("case.json", '{"format": 2}')
        z.writestr("case.html", "<p>page</p>")
    raw = bytearray(packed.getvalue())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the first member's local and central
        raw[raw.index(signature) + flags_at] |= 0x1  # headers: marked encrypted, it asks for a password (RuntimeError)
    (encrypted := tmp_path / "encrypted.zip").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="encrypted.zip is a damaged zip archive"):
        bundle.read(encrypted)
    monkeypatch.setattr(bundle, "MAX_UNZIPPED", 10_000)  # a bomb in small: more than the bound once unpacked
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("case.json", b"0" * 10_000)
        z.writestr("case.html", "<p>page</p>")
    with pytest.raises(BundleError, match="unpacks to 10,011 bytes; an exported bundle is at most 10,000"):
        bundle.read(bomb)


def test_a_bundle_exported_before_the_log_had_segments_still_verifies_its_links() -> None:
    """Format 1: one chain, events placed by their number, the proof from `from_seq` to the head's `seq`."""
    from fraud_service.store import chain

    events, previous = [], chain.GENESIS
    for seq in (1, 2, 3):
        at = T0.isoformat()
        digest = chain.link_hash(previous, seq, T0, "case_note", "cas_1", "user:ana", '{"note":"x"}')
        events.append({"seq": seq, "at": at, "kind": "case_note", "subject": "cas_1", "actor": "user:ana",
                       "payload": '{"note":"x"}', "prev_hash": previous, "hash": digest})
        previous = digest
    old = {"format": bundle.FORMATS[0], "case": {"events": events[1:]},
           "proof": {"from_seq": 2, "hashes": [events[0]["hash"], events[1]["hash"], events[2]["hash"]],
                     "head": {"seq": 3, "hash": previous}}}
    check = bundle.verify(old)
    assert check.events == 2 and check.heads == {"1": {"position": 3, "hash": previous}}
    assert not [p for p in check.problems if "link" in p or "changed" in p or "outside" in p]
    old["case"]["events"][0]["payload"] = '{"note":"y"}'
    assert "event 2 (case_note) was changed: its content does not hash to its link" in bundle.verify(old).problems
