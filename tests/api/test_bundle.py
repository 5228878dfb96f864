"""Evidence bundles: exported from the API, checked offline by `fraud-service evidence verify --bundle`, and any
edit to what they show (a note, a feature value, an event, a link) is caught."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.cli.main import main
from fraud_service.cases import bundle
from fraud_service.store.schema import EvidenceEvent
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case, post

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def exported(api: Api, set_policy: Any, tmp_path: Path) -> tuple[Path, dict[str, Any], str]:
    case_id, returns = open_case(api, set_policy, returns=2)
    open_case(api, set_policy)  # another case's events lie between this case's events
    post(api, f"/v1/cases/{case_id}/notes", {"body": "Parcel weighed 40 g at the depot."})
    post(api, f"/v1/cases/{case_id}/close", {"dispositions": {returns[0]: "fraud", returns[1]: "legit"},
                                             "reason": "empty box"})
    assert api.client.get(f"/v1/cases/{case_id}/bundle", headers=api.headers("analyst")).status_code == 405
    response = api.client.post(f"/v1/cases/{case_id}/bundle", headers=api.headers("analyst"))
    assert response.status_code == 200 and response.mimetype == "application/zip"
    path = tmp_path / "bundle.zip"
    path.write_bytes(response.data)
    with zipfile.ZipFile(io.BytesIO(response.data)) as z:
        assert sorted(z.namelist()) == [f"{case_id}.html", f"{case_id}.json"]
        raw = z.read(f"{case_id}.json")
        html = z.read(f"{case_id}.html").decode()
    assert response.headers["X-Bundle-SHA256"] == hashlib.sha256(raw).hexdigest()
    assert "Parcel weighed 40 g" in html and case_id in html and "empty box" in html
    with api.service.sessions() as session:
        export = session.execute(select(EvidenceEvent).where(EvidenceEvent.subject == case_id,
                                                             EvidenceEvent.kind == "case_bundle_exported")).scalar_one()
    assert json.loads(export.payload)["sha256"] == hashlib.sha256(raw).hexdigest()
    return path, json.loads(raw), case_id


def test_an_exported_bundle_verifies_offline(exported: tuple[Path, dict[str, Any], str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path, data, case_id = exported
    check = bundle.verify(data)
    assert check.ok, check.problems
    case = data["case"]
    assert check.events == len(case["events"]) and check.links > check.events  # other events lie between
    assert [a["return_id"] for a in case["assessment_list"]] and len(case["labels"]) == 2
    assert {e["kind"] for e in case["events"]} >= {"assessment", "case_opened", "case_joined", "case_note",
                                                   "case_closed"}
    assert main(["evidence", "verify", "--bundle", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"bundle of case {case_id} verified" in out and "its HTML page is the one that content renders to" in out
    json_only = path.with_suffix(".json")
    json_only.write_bytes(bundle.to_json(data))
    assert main(["evidence", "verify", "--bundle", str(json_only)]) == 0


def _edited(data: dict[str, Any], edit: Any) -> list[str]:
    changed = copy.deepcopy(data)
    edit(changed)
    return bundle.verify(changed).problems


def test_any_edit_to_a_bundle_is_caught(exported: tuple[Path, dict[str, Any], str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, data, _ = exported
    note = _edited(data, lambda d: d["case"]["notes"][0].update(body="Parcel weighed 900 g."))
    assert note == [f"note {data['case']['notes'][0]['event_seq']} differs from the recorded evidence"]

    def feature(d: dict[str, Any]) -> None:
        a = d["case"]["assessment_list"][0]
        name = sorted(a["features"])[0]
        a["features"][name] = 12345.0

    first = data["case"]["assessment_list"][0]["assessment_id"]
    assert _edited(data, feature) == [f"assessment {first}: its features differs from the recorded evidence"]
    assert _edited(data, lambda d: d["case"]["labels"][0].update(label="legit"))[0].startswith("label legit")

    def event(d: dict[str, Any]) -> None:
        e = next(e for e in d["case"]["events"] if e["kind"] == "case_note")
        e["payload"] = e["payload"].replace("40 g", "900 g")

    problems = _edited(data, event)
    assert any("was changed" in p for p in problems) and any("note" in p for p in problems)

    def link(d: dict[str, Any]) -> None:  # the link a bundled event rests on (links between others prove nothing)
        e = d["case"]["events"][len(d["case"]["events"]) // 2]
        proof = d["proof"]["chains"][str(e["chain"])]
        proof["hashes"][e["position"] - proof["from_position"]] = "f" * 64

    assert _edited(data, link)  # a link that is not the chain's
    assert sorted(data["proof"]["chains"]) != ["1"]  # the case's events lie on the root and on a writer's segment
    for c in data["proof"]["chains"]:
        assert _edited(data, lambda d, c=c: d["proof"]["chains"][c]["hashes"].pop())[0].startswith(
            f"the proof's links of chain {c} do not end")
    assert _edited(data, lambda d: d["proof"]["chains"].pop("1"))  # events with no links to rest on

    def renumbered(d: dict[str, Any]) -> None:  # numbers are not hashed: two events given one number is refused
        d["case"]["events"][1]["seq"] = d["case"]["events"][0]["seq"]

    assert any("appears twice" in p for p in _edited(data, renumbered))

    for shape in (lambda d: d["case"]["events"][0].update(at="not a time\x00"),  # each used to raise, not report
                  lambda d: d["case"]["events"].append(7), lambda d: d["case"]["events"][0].pop("prev_hash")):
        problems = _edited(data, shape)
        assert problems and problems[-1].startswith("the bundle is not in the shape an export has")
    (tmp_path / "case-list.json").write_text(json.dumps({**data, "case": [1]}))
    assert main(["evidence", "verify", "--bundle", str(tmp_path / "case-list.json")]) == 1
    assert "does NOT verify" in capsys.readouterr().out

    def dropped(d: dict[str, Any]) -> None:
        d["case"]["events"] = [e for e in d["case"]["events"] if e["kind"] != "case_note"]

    assert _edited(data, dropped) == [f"note {data['case']['notes'][0]['event_seq']} differs from the recorded "
                                      "evidence"]
    broken = tmp_path / "broken.json"
    changed = copy.deepcopy(data)
    changed["case"]["notes"][0]["body"] = "edited"
    broken.write_bytes(bundle.to_json(changed))
    assert main(["evidence", "verify", "--bundle", str(broken)]) == 1
    assert "does NOT verify" in capsys.readouterr().out
    (tmp_path / "not.json").write_text("[1, 2]")
    assert main(["evidence", "verify", "--bundle", str(tmp_path / "not.json")]) == 1
    assert "not an evidence bundle" in capsys.readouterr().err


@pytest.mark.parametrize(("where", "field", "value"), [
    ("assessment", "score", 0.0001), ("assessment", "return_id", "R-other"), ("assessment", "model_version", "v0099"),
    ("assessment", "risk_level", "low"), ("assessment", "refund_amount", 0.01),
    ("assessment", "assessed_at", "2020-01-01T00:00:00.000000+00:00"), ("assessment", "customer_id", "C-other"),
    ("case", "status", "escalated"), ("case", "assignee", "user:mallory"), ("case", "max_score", 0.01),
    ("case", "amount", 1.0), ("case", "customer_id", "C-other"), ("case", "decision", "deny"),
    ("case", "opened_at", "2020-01-01T00:00:00+00:00"), ("case", "closed_at", None),
    ("note", "author", "user:mallory"), ("note", "created_at", "2020-01-01T00:00:00+00:00"),
    ("label", "actor", "user:mallory"), ("label", "reason", "no reason"), ("label", "source", "model"),
])
def test_an_edited_shown_value_is_caught(exported: tuple[Path, dict[str, Any], str], where: str, field: str,
                                         value: Any) -> None:
    _, data, _ = exported
    assert bundle.verify(data).ok

    def edit(d: dict[str, Any]) -> None:
        shown = {"assessment": d["case"]["assessment_list"][0], "case": d["case"], "note": d["case"]["notes"][0],
                 "label": d["case"]["labels"][0]}[where]
        assert shown[field] != value
        shown[field] = value

    problems = _edited(data, edit)
    named = {"note": "note ", "label": "label "}.get(where, field)
    assert problems and any(named in p for p in problems), problems


def test_an_edited_html_page_is_caught(exported: tuple[Path, dict[str, Any], str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The page in the zip is rendered from the JSON: an edit to it alone, with the JSON untouched, is named."""
    path, _, case_id = exported
    with zipfile.ZipFile(path) as z:
        raw, page = z.read(f"{case_id}.json"), z.read(f"{case_id}.html").decode()
    edited = page.replace("Parcel weighed 40 g", "Parcel weighed 900 g")
    assert edited != page
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(forged, "w") as z:
        z.writestr(f"{case_id}.json", raw)
        z.writestr(f"{case_id}.html", edited)
    assert main(["evidence", "verify", "--bundle", str(forged)]) == 1
    out = capsys.readouterr().out
    line = next(i for i, text in enumerate(edited.splitlines(), 1) if "900 g" in text)
    assert f"the HTML page differs from what the verified JSON shows, first at line {line}" in out
    data, json_bytes, read_page = bundle.read(forged)
    assert read_page == edited and bundle.verify(data, json_bytes, page).ok  # the original page still matches
    extra = tmp_path / "extra.zip"
    with zipfile.ZipFile(extra, "w") as z:
        z.writestr(f"{case_id}.json", raw)
        z.writestr(f"{case_id}.html", page)
        z.writestr("readme.html", "<p>trust me</p>")
    assert main(["evidence", "verify", "--bundle", str(extra)]) == 1
    assert "exactly one JSON file and one HTML page" in capsys.readouterr().err


def test_a_key_written_twice_in_a_bundle_is_refused_naming_it(exported: tuple[Path, dict[str, Any], str],
                                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """JSON readers keep the first or the last of a repeated key: a viewer could show a status other than the one
    verified (the bundle verified before, its last value being the true one)."""
    path, _, case_id = exported
    with zipfile.ZipFile(path) as z:
        raw = z.read(f"{case_id}.json")
    at = raw.index(b"{", raw.index(b'"case"')) + 1
    forged_json = raw[:at] + b'"status": "open", ' + raw[at:]  # the true closed status still comes later
    assert json.loads(forged_json)["case"]["status"] == json.loads(raw)["case"]["status"]
    forged = tmp_path / "repeated.json"  # the JSON alone (in the zip, its page's digest of the JSON differs too)
    forged.write_bytes(forged_json)
    assert main(["evidence", "verify", "--bundle", str(forged)]) == 1
    assert "writes the key 'status' twice in one object" in capsys.readouterr().err
    deep = tmp_path / "deep.json"  # was "failed unexpectedly (RecursionError ...)"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["evidence", "verify", "--bundle", str(deep)]) == 1
    assert f"{deep} nests too deep to read: not an evidence bundle" in capsys.readouterr().err
