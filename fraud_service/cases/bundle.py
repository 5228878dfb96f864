"""Evidence bundles: one case, self-contained, with the hash-chain proof that it is what the log holds.

A bundle carries the case (summary, links, notes, labels), every assessment's stored evidence
(request, feature values and times, contributions, rules, response), the evidence events that
record them, and the proof: the chain's link hashes from just before the case's first event up
to the head at export time. `verify` checks offline, with nothing but the file, that

* each event's hash is the hash of its own content and of the link before it,
* the links run unbroken from the first event to the stated head,
* the assessments, notes and labels shown in the bundle are exactly the payloads of those events.

What a bundle cannot prove alone is that no other event about the case exists: `fraud-service
evidence verify` on the live log checks the whole chain, and the export is itself an event
(`case_bundle_exported`, with the bundle's SHA-256), so the log says which bundle was handed out.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import lzma
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fraud_service.cases import investigation
from fraud_service.cases import service as cases
from fraud_service.cases.investigation import CaseContext
from fraud_service.data.contract import repeated_key
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import BundleError
from fraud_service.store import chain
from fraud_service.store.schema import ChainHead, EvidenceEvent
from fraud_service.store.uow import UnitOfWork

FORMAT = "fraud-service evidence bundle 2"
FORMATS = ("fraud-service evidence bundle 1", FORMAT)  # 1: one chain, its proof runs by event number


def proof(session: Session, events: list[dict[str, Any]]) -> dict[str, Any]:
    """For each chain the case's EVENTS lie on, the link hashes from just before the first of them to that chain's
    current head (with the head itself)."""
    first: dict[int, int] = {}
    for e in events:
        first[e["chain"]] = min(first.get(e["chain"], e["position"]), e["position"])
    chains = {}
    for chain_id, start in sorted(first.items()):
        head = session.get(ChainHead, chain_id)
        if head is None:
            raise BundleError(f"the evidence chain has no head row for chain {chain_id}: run `fraud-service evidence "
                              "verify`")
        rows = session.execute(select(EvidenceEvent.prev_hash, EvidenceEvent.hash)
                               .where(EvidenceEvent.chain == chain_id, EvidenceEvent.position >= start,
                                      EvidenceEvent.position <= head.seq)
                               .order_by(EvidenceEvent.position)).all()
        chains[str(chain_id)] = {"from_position": start, "hashes": [rows[0][0]] + [h for _, h in rows] if rows else [],
                                 "head": {"position": head.seq, "hash": head.hash}}
    return {"chains": chains}


@dataclass(frozen=True)
class Export:
    """An exported bundle: the case as shown, the bundle, its JSON bytes, their SHA-256, and the zip handed out."""

    case: CaseContext
    bundle: dict[str, Any]
    data: bytes
    digest: str
    archive: bytes = b""


def export(uow: UnitOfWork, *, case_id: str, actor: str, warehouse_dir: Path,
           now: dt.datetime | None = None) -> Export:
    """Build the bundle of CASE_ID, package it (its JSON, and the HTML page rendered from that JSON, in a zip)
    and record the export (`case_bundle_exported`, naming the JSON's SHA-256), reading the case and appending
    the event in one transaction: a failure anywhere, rendering included, records nothing."""
    now = now or dt.datetime.now(dt.UTC)
    snapshot = Warehouse(warehouse_dir).current()
    with investigation.one_at_a_time(warehouse_dir), uow:
        case = investigation.context(uow.session, snapshot, cases.detail(uow.session, case_id, now))
        bundle = build(case.to_dict(), uow.session, actor, chain.utc_text(now))
        data = to_json(bundle)
        done = Export(case, bundle, data, digest(data))
        done = replace(done, archive=archive(data, html(json.loads(data), done.digest), case_id))
        heads = {c: p["head"]["position"] for c, p in bundle["proof"]["chains"].items()}
        uow.record(kind="case_bundle_exported", subject=case_id, actor=actor, at=now,
                   payload={"case_id": case_id, "sha256": done.digest, "heads": heads})
        uow.commit()
    return done


def build(case: dict[str, Any], session: Session, exported_by: str, exported_at: str) -> dict[str, Any]:
    """The bundle of CASE (a `CaseContext.to_dict()` or `CaseDetail.to_dict()`: the case as it is shown)."""
    return {"format": FORMAT, "exported_by": exported_by, "exported_at": exported_at, "case": case,
            "proof": proof(session, case["events"])}


def to_json(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle, indent=1, sort_keys=True, ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive(json_bytes: bytes, html: str, case_id: str) -> bytes:
    """A zip holding the bundle as JSON and as a printable HTML page."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{case_id}.json", json_bytes)
        z.writestr(f"{case_id}.html", html)
    return buffer.getvalue()


def html(bundle: dict[str, Any], sha256: str) -> str:
    """The printable page of a bundle, rendered from its JSON content alone (and that JSON's SHA-256), so that
    `verify` can render it again and compare: the page shows nothing the JSON does not hold."""
    return _template().render(bundle=bundle, case=bundle["case"], digest=sha256)


@functools.cache
def _template() -> Any:
    """The page's template, compiled once per process (every export and every `verify --bundle` renders it)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=True, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)
    environment.filters["fmt"] = _number
    return environment.get_template("bundle.html")


def _number(value: Any, spec: str) -> str:
    """VALUE formatted by SPEC when it is a number; whatever else it is, shown as it is (a page always renders)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return "—" if value is None or not str(value) else str(value)


MAX_UNZIPPED = 1 << 30
"""The most a bundle's zip may unpack to (a case's bundle is megabytes): a zip bomb is refused unread."""


def read(path: Path) -> tuple[dict[str, Any], bytes, str | None]:
    """A bundle from a .json file or from the zip the API exports; with the JSON bytes and the zip's HTML page
    (None for a .json file)."""
    if path.exists() and not path.is_file():  # a FIFO or a device would never end
        raise BundleError(f"{path} is not a regular file: expected a bundle's .zip or .json")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    page = None
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            data, page = _unzip(path, data)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, zlib.error,
                lzma.LZMAError, RuntimeError) as exc:  # RuntimeError: an encrypted member
            raise BundleError(f"{path} is a damaged zip archive ({exc}); export the bundle again") from None
    elif path.suffix.lower() == ".zip":
        raise BundleError(f"{path} is not a zip archive: expected the bundle's .zip as exported, or its .json")
    try:
        bundle = json.loads(data, object_pairs_hook=_once_each)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not JSON: {exc}") from None
    except RecursionError:  # arrays in arrays, thousands deep: Python's reader gives up, not with a ValueError
        raise BundleError(f"{path} nests too deep to read: not an evidence bundle") from None
    except BundleError as exc:  # a repeated key (`_once_each`)
        raise BundleError(f"{path} {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("format") not in FORMATS:
        raise BundleError(f"{path} is not an evidence bundle (expected format {FORMAT!r})")
    return bundle, data, page


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys each appear once, or BundleError naming the first repeated one: a JSON reader keeps
    one value or the other, so what one viewer shows would not be what `verify` checked."""
    if (key := repeated_key(pairs)) is not None:
        raise BundleError(f"writes the key {key[:100]!r} twice in one object; an export never does (JSON readers "
                          "keep one value or the other: what one shows would not be what was verified)")
    return dict(pairs)


def _unzip(path: Path, data: bytes) -> tuple[bytes, str]:
    """The JSON bytes and the HTML page of an exported bundle's zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = [n for n in z.namelist() if n.endswith(".json")]
        pages = [n for n in z.namelist() if n.endswith(".html")]
        if len(names) != 1 or len(pages) != 1 or len(z.namelist()) != 2:
            raise BundleError(f"{path} holds {', '.join(z.namelist()) or 'nothing'}; an exported bundle holds "
                              "exactly one JSON file and one HTML page")
        if (size := sum(info.file_size for info in z.infolist())) > MAX_UNZIPPED:
            raise BundleError(f"{path} unpacks to {size:,} bytes; an exported bundle is at most "
                              f"{MAX_UNZIPPED:,} bytes")
        json_bytes, page = z.read(names[0]), z.read(pages[0])
    try:
        return json_bytes, page.decode()
    except UnicodeDecodeError:
        return json_bytes, ""  # verify then says the page is not the one the JSON renders to


@dataclass
class BundleCheck:
    events: int = 0
    links: int = 0
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # chain -> its head at export (position, hash)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(bundle: dict[str, Any], data: bytes | None = None, page: str | None = None) -> BundleCheck:
    """Check a bundle offline: event hashes, the unbroken links to the head, and content against events; with
    the JSON's bytes (DATA) and its HTML PAGE, also that the page is the one the verified JSON renders to. A bundle
    edited into a shape no export has (a field of the wrong type, a time that is not one, a payload that is not
    JSON) is a problem named, not an error."""
    check = BundleCheck()
    try:
        return _verify(bundle, data, page, check)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        check.problems.append(f"the bundle is not in the shape an export has ({type(exc).__name__}: {exc})")
        return check


def _verify(bundle: dict[str, Any], data: bytes | None, page: str | None, check: BundleCheck) -> BundleCheck:
    try:
        case, chains = bundle["case"], _chains(bundle)
        events = list(case["events"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        check.problems.append(f"the bundle lacks a part: {exc}")
        return check
    for chain_id, p in chains.items():
        start, hashes, head = p["from_position"], p["hashes"], p["head"]
        check.heads[chain_id] = head
        check.links += max(len(hashes) - 1, 0)
        if start + len(hashes) - 2 != head.get("position") or (hashes and hashes[-1] != head.get("hash")):
            check.problems.append(f"the proof's links of chain {chain_id} do not end at the stated head (link "
                                  f"{head.get('position')})")
    by_seq: dict[int, dict[str, Any]] = {}
    places: set[tuple[Any, Any]] = set()
    one_chain = bundle.get("format") == FORMATS[0]  # format 1: every event on the one chain, at its number
    for e in events:
        seq = e.get("seq")
        on, position = (chain.ROOT, seq) if one_chain else (e.get("chain"), e.get("position"))
        if seq in by_seq or (on, position) in places:
            check.problems.append(f"event {seq} appears twice, or shares its place in a chain with another event")
            continue
        links = chains.get(str(on)) if isinstance(on, int) else None
        i = position - links["from_position"] if links is not None and isinstance(position, int) else -1
        if links is None or not 0 <= i < len(links["hashes"]) - 1:
            check.problems.append(f"event {seq} lies outside the proof's links")
            continue
        hashes = links["hashes"]
        if e["prev_hash"] != hashes[i] or e["hash"] != hashes[i + 1]:
            check.problems.append(f"event {seq} is not the event the chain holds at that position")
            continue
        at = dt.datetime.fromisoformat(e["at"])
        if chain.event_hash(hashes[i], int(on), position, at, e["kind"], e["subject"], e["actor"],
                            e["payload"]) != e["hash"]:
            check.problems.append(f"event {seq} ({e['kind']}) was changed: its content does not hash to its link")
            continue
        by_seq[seq] = e
        places.add((on, position))
        check.events += 1
    _check_content(case, by_seq, check.problems)
    if page is not None and data is not None:
        check.problems.extend(_page_differences(bundle, digest(data), page))
    return check


def _chains(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The proof of each chain (its first position, link hashes and head), whichever format the bundle has."""
    p = bundle["proof"]
    if bundle.get("format") == FORMATS[0]:  # one chain, positions were event numbers
        return {str(chain.ROOT): {"from_position": int(p["from_seq"]), "hashes": list(p["hashes"]),
                                  "head": {"position": p["head"]["seq"], "hash": p["head"]["hash"]}}}
    return {str(c): {"from_position": int(q["from_position"]), "hashes": list(q["hashes"]), "head": dict(q["head"])}
            for c, q in dict(p["chains"]).items()}


def _page_differences(bundle: dict[str, Any], sha256: str, page: str) -> list[str]:
    """The HTML page against the page the JSON renders to: the first line that differs, if one does."""
    try:
        expected = html(bundle, sha256)
    except Exception as exc:  # a JSON edited into a shape the page cannot show
        return [f"the HTML page cannot be rendered from the JSON ({type(exc).__name__}: {exc})"]
    if page == expected:
        return []
    shown, wanted = page.splitlines(), expected.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(shown, wanted, strict=False)) if a != b),
                min(len(shown), len(wanted)))
    text = shown[line].strip()[:80] if line < len(shown) else "(the page ends early)"
    return [f"the HTML page differs from what the verified JSON shows, first at line {line + 1}: {text!r}"]


def _payload(by_seq: dict[int, dict[str, Any]], seq: Any) -> dict[str, Any] | None:
    event = by_seq.get(seq) if isinstance(seq, int) else None
    return None if event is None else dict(json.loads(event["payload"]))


def _check_content(case: dict[str, Any], by_seq: dict[int, dict[str, Any]], problems: list[str]) -> None:
    for a in case.get("assessment_list", []):
        payload = _payload(by_seq, a.get("event_seq"))
        if payload is None:
            problems.append(f"assessment {a.get('assessment_id')} has no verified event in the bundle")
            continue
        for key in _assessment_differences(a, payload):
            problems.append(f"assessment {a.get('assessment_id')}: its {key} differs from the recorded evidence")
    for note in case.get("notes", []):
        seq = note.get("event_seq")
        payload = _payload(by_seq, seq)
        if (payload is None or payload.get("note") != note.get("body") or note.get("author") != by_seq[seq]["actor"]
                or _instant(note.get("created_at")) != _instant(by_seq[seq]["at"])):
            problems.append(f"note {seq} differs from the recorded evidence")
    recorded = set()
    for e in by_seq.values():
        if e["kind"] == "case_closed":
            closing = json.loads(e["payload"])
            recorded |= {(x["return_id"], x["label"], x["labelled_at"], x.get("source"), e["actor"],
                          closing.get("reason"), e["subject"]) for x in closing.get("labels", [])}
        elif e["kind"] == "inspection":
            found = json.loads(e["payload"])
            known = found.get("labelled_at", found.get("inspected_at"))  # events before labelled_at was recorded
            recorded.add((found.get("return_id"), found.get("label"), known, "inspection", e["actor"],
                          found.get("reason"), found.get("case_id")))
    for label in case.get("labels", []):
        shown = tuple(label.get(k) for k in ("return_id", "label", "labelled_at", "source", "actor", "reason",
                                             "case_id"))
        if shown not in recorded:
            problems.append(f"label {label.get('label')} of return {label.get('return_id')} is in no verified "
                            "closing or inspection event")
    problems.extend(_summary_differences(case, by_seq))


def _assessment_differences(a: dict[str, Any], payload: dict[str, Any]) -> list[str]:
    """The fields of a shown assessment that its verified event does not bear out."""
    response, request = payload.get("response", {}), payload.get("request", {})
    shown = {"request": a.get("request"), "features": a.get("features"), "contributions": a.get("contributions"),
             "reasons": a.get("reasons"), "rules_fired": a.get("rules_fired"), "decision": a.get("decision"),
             "return_id": a.get("return_id"), "model_version": a.get("model_version"),
             "policy_version": a.get("policy_version"), "risk_level": a.get("risk_level"),
             "customer_id": a.get("customer_id"), "refund_amount": a.get("refund_amount"),
             "score": _rounded(a.get("score"), 6), "assessed_at": _instant(a.get("assessed_at"))}
    stored = {"request": request, "features": payload.get("features"), "contributions": payload.get("contributions"),
              "reasons": response.get("reasons"), "rules_fired": response.get("rules_fired"),
              "decision": response.get("decision"), "return_id": response.get("return_id"),
              "model_version": response.get("model_version"), "policy_version": response.get("policy_version"),
              "risk_level": response.get("risk_level"), "customer_id": request.get("customer_id"),
              "refund_amount": request.get("refund_amount"), "score": _rounded(response.get("score"), 6),
              "assessed_at": _instant(response.get("assessed_at"))}
    return [key for key, value in shown.items() if chain.canonical(value) != chain.canonical(stored[key])]


def _summary_differences(case: dict[str, Any], by_seq: dict[int, dict[str, Any]]) -> list[str]:
    """The case's shown summary (status, assignee, customer, decision, when opened and closed, money at stake,
    highest score) against what its verified events and assessments say (replayed in time order)."""
    status, assignee, customer, decision, opened, closed = "open", None, None, None, None, None
    for e in sorted(by_seq.values(), key=_when):
        if e["subject"] != case.get("case_id"):
            continue
        payload = json.loads(e["payload"])
        changes = payload.get("changes", {})
        status = changes.get("status", [None, status])[1]
        assignee = changes.get("assignee", [None, assignee])[1]
        if e["kind"] == "case_opened":
            customer, decision, opened = payload.get("customer_id"), payload.get("decision"), _instant(e["at"])
        elif e["kind"] == "case_joined" and payload.get("decision") == "deny":
            decision = "deny"
        if e["kind"] == "case_closed":
            closed = _instant(e["at"])
        elif e["kind"] == "case_reopened":
            closed = None
    scores = [s for a in case.get("assessment_list", []) if (s := _rounded(a.get("score"), 6)) is not None]
    amounts = [a.get("refund_amount") or 0.0 for a in case.get("assessment_list", [])]
    shown = {"status": case.get("status"), "assignee": case.get("assignee"), "customer_id": case.get("customer_id"),
             "decision": case.get("decision"), "opened_at": _instant(case.get("opened_at")),
             "closed_at": _instant(case.get("closed_at")) if case.get("closed_at") else None,
             "max_score": _rounded(case.get("max_score"), 6), "amount": _rounded(case.get("amount"), 2)}
    derived = {"status": status, "assignee": assignee, "customer_id": customer, "decision": decision,
               "opened_at": opened, "closed_at": closed if status == "closed" else None,
               "max_score": max(scores, default=None), "amount": _rounded(sum(amounts), 2)}
    return [f"the case's {key} ({shown[key]}) differs from what its verified events say ({derived[key]})"
            for key in shown if shown[key] != derived[key]]


def _when(e: dict[str, Any]) -> tuple[str, int, int]:
    """The order a case's events are replayed in: by their times (which their hashes cover), then by chain and
    position (numbers are not hashed: the order they give across chains is not evidence)."""
    return _instant(e["at"]) or "", int(e.get("chain") or chain.ROOT), int(e.get("position") or e["seq"])


def _rounded(value: Any, digits: int) -> float | None:
    return round(float(value), digits) if isinstance(value, int | float) else None


def _instant(text: Any) -> str | None:
    """A time as one canonical UTC text, whichever way it was written."""
    try:
        return chain.utc_text(dt.datetime.fromisoformat(str(text)))
    except ValueError:
        return None
