"""The returns system hears back (issue 17): outcomes on assessments, inspections, appeals, webhook management, on
SQLite and PostgreSQL through HTTP. Each change after the first answer must be an evidence event and an outbox event in
the change's own transaction."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from fraud_service.access.keys import create_key
from fraud_service.store.schema import Case, EvidenceEvent, Inspection, Label, User, WebhookDelivery, WebhookEvent
from tests.api.conftest import Api
from tests.api.test_cases_api import post
from tests.api.test_cases_opened import _assess, _new_identity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def outcome(api: Api, assessment_id: str, role: str = "scoring") -> dict[str, Any]:
    got = api.client.get(f"/v1/assessments/{assessment_id}", headers=api.headers(role))
    assert got.status_code == 200, got.get_json()
    return dict(got.get_json()["outcome"])


def outbox(api: Api, kind: str, **data: str) -> list[dict[str, Any]]:
    """The outbox events of KIND whose data has DATA's values."""
    with api.service.sessions() as session:
        rows = session.execute(select(WebhookEvent).where(WebhookEvent.type == kind)).scalars().all()
    found = [json.loads(r.data) | {"_id": r.id} for r in rows]
    return [f for f in found if all(f.get(k) == v for k, v in data.items())]


def kinds(api: Api, subject: str) -> list[str]:
    with api.service.sessions() as session:
        return list(session.execute(select(EvidenceEvent.kind).where(EvidenceEvent.subject == subject)
                                    .order_by(EvidenceEvent.seq)).scalars())


def inspect(api: Api, return_id: str, outcome: str, at: str | None = None, **extra: Any) -> Any:
    body = {"inspected_at": at or dt.datetime.now(dt.UTC).isoformat(), "outcome": outcome, **extra}
    return api.client.post(f"/v1/returns/{return_id}/inspection", json=body, headers=api.headers())


def bundle_problems(api: Api, case_id: str) -> list[str]:
    """What `verify` finds wrong with the case's exported bundle (its JSON and its HTML page)."""
    import io
    import zipfile

    from fraud_service.cases import bundle

    exported = post(api, f"/v1/cases/{case_id}/bundle")
    assert exported.status_code == 200
    with zipfile.ZipFile(io.BytesIO(exported.data)) as z:
        raw, page = z.read(f"{case_id}.json"), z.read(f"{case_id}.html").decode()
    return bundle.verify(json.loads(raw), raw, page).problems


def assessed(api: Api, set_policy: Any, decision: str) -> dict[str, Any]:
    body = _new_identity(api)
    got = _assess(api, set_policy, body, decision)
    got["requested_at"] = body["requested_at"]
    return got


def test_the_first_answer_sets_the_outcome_and_only_its_key_reads_it(api: Api, set_policy: Any) -> None:
    expected = {"approve": ("final", "refund_approved"), "store_credit_only": ("final", "store_credit"),
                "approve_after_inspection": ("pending_inspection", "refund_after_inspection"),
                "review": ("pending_review", "in_review"), "deny": ("pending_review", "in_review")}
    for decision, (status, code) in expected.items():
        got = assessed(api, set_policy, decision)
        seen = outcome(api, got["assessment_id"])
        assert (seen["status"], seen["decision"], seen["customer_message"]["code"]) == (status, decision, code)
        assert seen["decided_by"] == "model" and seen["label"] is None and seen["appealed"] is False
        assert dt.datetime.fromisoformat(seen["decided_at"]) == dt.datetime.fromisoformat(got["assessed_at"])
        text = seen["customer_message"]["text"].lower()
        assert not any(word in text for word in ("fraud", "score", "risk", "suspicious", "model"))
    other = create_key(api.service.uow(), "scoring", "another store", "test")
    foreign = api.client.get(f"/v1/assessments/{got['assessment_id']}", headers={"Authorization": f"Bearer {other}"})
    unknown = api.client.get("/v1/assessments/asm_nobody", headers={"Authorization": f"Bearer {other}"})
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.get_json()["message"].replace(got["assessment_id"], "ID") == unknown.get_json()["message"].replace(
        "asm_nobody", "ID")  # to another key it does not exist: the very same answer
    rotated = create_key(api.service.uow(), "scoring", "test scoring", "test")  # a new key under the same name
    again = api.client.get(f"/v1/assessments/{got['assessment_id']}", headers={"Authorization": f"Bearer {rotated}"})
    assert again.status_code == 200 and again.get_json()["outcome"]["status"] == "pending_review"
    assert outcome(api, got["assessment_id"], role="analyst")["status"] == "pending_review"


def test_a_rule_decided_answer_stays_rule_decided_through_an_appeal(api: Api) -> None:
    body = _new_identity(api)
    added = api.client.post("/v1/lists", json={"entity": "customer", "value": body["customer_id"], "list": "block",
                                               "reason": "test"}, headers=api.headers("admin"))
    assert added.status_code == 201
    got = api.assess(body).get_json()
    assert got["decision"] == "deny" and got["model_decision"] != "deny", got
    assert outcome(api, got["assessment_id"])["decided_by"] == "rule"
    appealed = api.client.post(f"/v1/assessments/{got['assessment_id']}/appeal", json={"message": "not me"},
                               headers=api.headers())
    assert appealed.status_code == 200 and appealed.get_json()["outcome"]["decided_by"] == "rule"
    [event] = outbox(api, "assessment.outcome", assessment_id=got["assessment_id"])
    assert event["outcome"]["decided_by"] == "rule"
    with api.service.sessions() as session:
        changed = session.execute(select(EvidenceEvent.payload).where(
            EvidenceEvent.subject == got["assessment_id"], EvidenceEvent.kind == "outcome_changed")).scalar_one()
    assert json.loads(changed)["before"]["decided_by"] == "rule"


def test_an_appealed_case_goes_to_whoever_asks_for_the_next_case(api: Api, set_policy: Any) -> None:
    from fraud_service.access.users import create_user

    got = assessed(api, set_policy, "deny")
    for _ in range(20):  # claim cases until this one is ours (the queue holds other tests' cases too)
        taken = post(api, "/v1/cases/next")
        if taken.status_code == 204 or taken.get_json()["case_id"] == got["case_id"]:
            break
    assert post(api, f"/v1/cases/{got['case_id']}/claim").status_code == 200
    assert post(api, f"/v1/cases/{got['case_id']}/close", {"label": "fraud", "reason": "x"}).status_code == 200
    assert api.client.post(f"/v1/assessments/{got['assessment_id']}/appeal", json={"message": "please"},
                           headers=api.headers()).status_code == 200
    reopened = api.client.get(f"/v1/cases/{got['case_id']}", headers=api.headers("analyst")).get_json()
    assert reopened["status"] == "open" and reopened["assignee"] is None
    with api.service.sessions() as session:
        exists = session.get(User, "bo") is not None
    if not exists:
        create_user(api.service.uow(), "bo", "analyst", "a long enough password", "test")
    handed = []
    while not handed or handed[-1]["case_id"] != got["case_id"]:
        nxt = post(api, "/v1/cases/next")
        assert nxt.status_code == 200, "the appealed case was never handed out"
        handed.append(nxt.get_json())
    assert all(c["appealed_at"] for c in handed)  # appealed cases first in line, whoever asks


def test_a_close_decided_on_a_page_from_before_an_appeal_is_refused(api: Api, set_policy: Any) -> None:
    got = assessed(api, set_policy, "review")
    seen = api.client.get(f"/v1/cases/{got['case_id']}", headers=api.headers("analyst")).get_json()["updated_at"]
    assert api.client.post(f"/v1/assessments/{got['assessment_id']}/appeal", json={"message": "look again"},
                           headers=api.headers()).status_code == 200
    stale = post(api, f"/v1/cases/{got['case_id']}/close", {"label": "fraud", "reason": "x", "unchanged_since": seen})
    assert stale.status_code == 409 and "reload" in stale.get_json()["message"]
    assert outcome(api, got["assessment_id"])["status"] == "pending_review"  # nothing was closed
    now = api.client.get(f"/v1/cases/{got['case_id']}", headers=api.headers("analyst")).get_json()["updated_at"]
    for bad in ("last tuesday", ""):
        garbled = post(api, f"/v1/cases/{got['case_id']}/close", {"label": "legit", "reason": "ok",
                                                                 "unchanged_since": bad})
        assert garbled.status_code == 422 and garbled.get_json()["problems"][0]["field"] == "unchanged_since"
    before_inspection = now
    assert inspect(api, got["return_id"], "empty_box").status_code == 201  # the warehouse reports: news for the case
    stale = post(api, f"/v1/cases/{got['case_id']}/close", {"label": "legit", "reason": "x",
                                                           "unchanged_since": before_inspection})
    assert stale.status_code == 409
    now = api.client.get(f"/v1/cases/{got['case_id']}", headers=api.headers("analyst")).get_json()["updated_at"]
    same_instant = dt.datetime.fromisoformat(now).astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    fresh = post(api, f"/v1/cases/{got['case_id']}/close", {"label": "legit", "reason": "ok",
                                                           "unchanged_since": same_instant})  # any spelling of it
    assert fresh.status_code == 200


def test_closing_a_case_makes_each_outcome_final_and_tells_the_returns_system(api: Api, set_policy: Any) -> None:
    first = assessed(api, set_policy, "review")
    body = _new_identity(api)
    body["customer_id"] = f"cust-{first['return_id'].removeprefix('case-')}"  # the same customer: joins the case
    second = _assess(api, set_policy, {**body, "return_id": first["return_id"] + "-b"}, "deny")
    case_id = first["case_id"]
    assert second["case_id"] == case_id
    closed = post(api, f"/v1/cases/{case_id}/close", {
        "dispositions": {first["return_id"]: "legit", second["return_id"]: "fraud"}, "reason": "checked"})
    assert closed.status_code == 200, closed.get_json()
    one, two = outcome(api, first["assessment_id"]), outcome(api, second["assessment_id"])
    assert (one["status"], one["decision"], one["label"], one["customer_message"]["code"]) == (
        "final", "approve", "legit", "refund_approved")
    assert (two["status"], two["decision"], two["label"], two["customer_message"]["code"]) == (
        "final", "deny", "fraud", "not_approved")
    assert one["decided_by"].startswith("key:") and one["decided_by"] == two["decided_by"]
    assert kinds(api, first["assessment_id"]) == ["assessment", "outcome_changed"]
    for a, label in ((first, "legit"), (second, "fraud")):
        [event] = outbox(api, "assessment.outcome", assessment_id=a["assessment_id"])
        assert event["outcome"]["label"] == label and event["case_id"] == case_id
    [event] = outbox(api, "case.closed", case_id=case_id)
    assert {(r["return_id"], r["decision"]) for r in event["returns"]} == {
        (first["return_id"], "approve"), (second["return_id"], "deny")}


def test_an_inspection_reaches_a_return_whose_id_holds_slashes_and_dots(api: Api, set_policy: Any) -> None:
    """Return ids are the retailer's: RMA numbers such as "RMA/2026/..." are fine, written percent-encoded (or
    not) in the inspection's path."""
    from urllib.parse import quote

    body = _new_identity(api)
    for n, return_id in enumerate((f"RMA/2026/{body['return_id']}", f"/../{body['return_id']}.x//")):
        got = _assess(api, set_policy, {**body, "return_id": return_id}, "approve_after_inspection")
        assert got["return_id"] == return_id
        written = quote(return_id, safe="") if n == 0 else quote(return_id, safe="/")
        answer = api.client.post(f"/v1/returns/{written}/inspection", headers=api.headers(),
                                 json={"inspected_at": dt.datetime.now(dt.UTC).isoformat(), "outcome": "ok"})
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["return_id"] == return_id
        assert outcome(api, got["assessment_id"])["status"] == "final"


def test_inspection_contract_errors(api: Api, set_policy: Any) -> None:
    assert inspect(api, "no-such-return", "ok").status_code == 404
    got = assessed(api, set_policy, "approve_after_inspection")
    bad = inspect(api, got["return_id"], "smelly", notes=7)
    assert bad.status_code == 422
    fields = {p["field"]: p for p in bad.get_json()["problems"]}
    assert set(fields) == {"outcome", "notes"} and "empty_box" in fields["outcome"]["expected"]
    early = inspect(api, got["return_id"], "ok", at="2000-01-01T00:00:00Z")
    assert early.status_code == 422 and early.get_json()["problems"][0]["field"] == "inspected_at"
    not_time = inspect(api, got["return_id"], "ok", at="yesterday")
    assert not_time.status_code == 422 and "ISO 8601" in not_time.get_json()["problems"][0]["expected"]
    foreign = create_key(api.service.uow(), "scoring", "another store", "test")
    for body in ({"inspected_at": "2000-01-01T00:00:00Z", "outcome": "ok"}, {"inspected_at": "2026-01-01",
                                                                             "outcome": "ok"}):
        theirs = api.client.post(f"/v1/returns/{got['return_id']}/inspection", json=body,
                                 headers={"Authorization": f"Bearer {foreign}"})
        unknown = api.client.post("/v1/returns/no-such-return/inspection", json=body,
                                  headers={"Authorization": f"Bearer {foreign}"})
        assert theirs.status_code == unknown.status_code == 404  # another name's return does not exist for it
        assert theirs.get_json()["message"].replace(got["return_id"], "R") == unknown.get_json()["message"].replace(
            "no-such-return", "R")
    analyst = api.client.post(f"/v1/returns/{got['return_id']}/inspection", json={"inspected_at": "2026-01-01",
                              "outcome": "ok"}, headers=api.headers("analyst"))
    assert analyst.status_code == 403
    assert outcome(api, got["assessment_id"])["status"] == "pending_inspection"  # nothing stored by the refusals


def test_a_return_waiting_for_its_inspection_cannot_be_appealed_and_the_inspection_still_decides(
        api: Api, set_policy: Any) -> None:
    """An appeal moved the outcome to pending_review, after which a passed inspection no longer approved it: the
    refund waited for an analyst."""
    got = assessed(api, set_policy, "approve_after_inspection")
    refused = api.client.post(f"/v1/assessments/{got['assessment_id']}/appeal", headers=api.headers(),
                              json={"message": "why is my refund not paid yet?"})
    assert refused.status_code == 409 and "waits for the return's inspection" in refused.get_json()["message"]
    assert outcome(api, got["assessment_id"])["status"] == "pending_inspection"
    done = inspect(api, got["return_id"], "ok")
    assert done.status_code == 201
    assert (done.get_json()["assessment_outcome"]["status"], done.get_json()["assessment_outcome"]["decision"]) == (
        "final", "approve")


@pytest.mark.parametrize("result, status, decision, label, case", [
    ("ok", "final", "approve", "legit", False),
    ("empty_box", "final", "deny", "fraud", True),
    ("worn", "pending_review", "review", "abuse", True),
])
def test_an_inspection_decides_a_pending_inspection(api: Api, set_policy: Any, result: str, status: str,
                                                    decision: str, label: str, case: bool) -> None:
    got = assessed(api, set_policy, "approve_after_inspection")
    at = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    first = inspect(api, got["return_id"], result, at=at, notes="weighed 40 g")
    assert first.status_code == 201, first.get_json()
    done = first.get_json()
    assert (done["label"], done["assessment_outcome"]["status"], done["assessment_outcome"]["decision"]) == (
        label, status, decision)
    assert done["assessment_outcome"]["decided_by"] == "inspection"
    assert (done["case_id"] is not None) == case
    again = inspect(api, got["return_id"], result, at=at, notes="weighed 40 g")
    assert again.status_code == 200 and again.get_json() == done
    clash = inspect(api, got["return_id"], "ok" if result != "ok" else "worn", at=at, notes="weighed 40 g")
    assert clash.status_code == 409
    other_notes = inspect(api, got["return_id"], result, at=at, notes="weighed 400 g")
    assert other_notes.status_code == 409 and "notes 'weighed 40 g'; this one's notes differ: an inspection is " \
        "never replaced" in other_notes.get_json()["message"]
    both = inspect(api, got["return_id"], "ok" if result != "ok" else "worn", at=at, notes="weighed 400 g")
    assert both.status_code == 409 and "this one's outcome and notes differ:" in both.get_json()["message"]
    assert "this one's outcome differs:" in clash.get_json()["message"], clash.get_json()
    seen = outcome(api, got["assessment_id"])
    assert (seen["status"], seen["decision"], seen["label"]) == (status, decision, label)
    with api.service.sessions() as session:
        rows = session.execute(select(Inspection).where(Inspection.return_id == got["return_id"])).scalars().all()
        labels = session.execute(select(Label).where(Label.return_id == got["return_id"])).scalars().all()
        if case:
            opened = session.get(Case, done["case_id"])
            assert opened is not None and opened.status == "open" and opened.decision == (
                "deny" if result == "empty_box" else "review")
    assert [(r.outcome, r.notes) for r in rows] == [(result, "weighed 40 g")]
    assert [(x.label, x.source, x.case_id) for x in labels] == [(label, "inspection", done["case_id"])]
    assert kinds(api, got["assessment_id"]) == ["assessment", "outcome_changed", "inspection"]
    assert len(outbox(api, "assessment.outcome", assessment_id=got["assessment_id"])) == 1
    if case:  # the case opened by the inspection shows it, and its bundle verifies (the inspection label too)
        shown = api.client.get(f"/v1/cases/{done['case_id']}", headers=api.headers("analyst")).get_json()
        assert {"inspection", "outcome_changed"} <= {e["kind"] for e in shown["events"]}
        assert [(x["label"], x["source"]) for x in shown["labels"]] == [(label, "inspection")]
        assert bundle_problems(api, done["case_id"]) == []


def test_an_inspection_leaves_a_decided_outcome_but_puts_failed_goods_before_a_person(api: Api,
                                                                                       set_policy: Any) -> None:
    got = assessed(api, set_policy, "approve")
    done = inspect(api, got["return_id"], "missing_parts").get_json()
    assert done["assessment_outcome"]["status"] == "final" and done["assessment_outcome"]["decision"] == "approve"
    assert done["case_id"] is not None and done["label"] == "fraud"
    assert outbox(api, "assessment.outcome", assessment_id=got["assessment_id"]) == []


def test_an_appeal_reopens_the_case_at_the_top_of_the_queue(api: Api, set_policy: Any) -> None:
    approved = assessed(api, set_policy, "approve")
    refused = api.client.post(f"/v1/assessments/{approved['assessment_id']}/appeal", json={"message": "why?"},
                              headers=api.headers())
    assert refused.status_code == 409
    denied = assessed(api, set_policy, "deny")
    case_id = denied["case_id"]
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "fraud", "reason": "box was empty"}).status_code == 200
    for _ in range(2):  # other open cases with a higher priority than this one
        big = _new_identity(api)
        big["refund_amount"] = big["order"]["order_total"] = 5000.0
        _assess(api, set_policy, big, "review")
    appeal = api.client.post(f"/v1/assessments/{denied['assessment_id']}/appeal",
                             json={"message": "The parcel was full, I have the courier's photo."},
                             headers=api.headers())
    assert appeal.status_code == 200, appeal.get_json()
    got = appeal.get_json()
    assert got["case_id"] == case_id
    assert (got["outcome"]["status"], got["outcome"]["decision"], got["outcome"]["appealed"]) == (
        "pending_review", "deny", True)
    assert got["outcome"]["customer_message"]["code"] == "appeal_received"
    queue = api.client.get("/v1/cases?limit=500", headers=api.headers("analyst")).get_json()["cases"]
    ours = next(i for i, c in enumerate(queue) if c["case_id"] == case_id)
    assert queue[ours]["appealed_at"] is not None and queue[ours]["status"] == "open"
    assert all(c["appealed_at"] for c in queue[:ours])  # only appealed cases ahead, however big the others
    assert any(c["priority"] > queue[ours]["priority"] for c in queue[ours + 1:])
    page = api.client.get(f"/v1/cases/{case_id}", headers=api.headers("analyst")).get_json()
    assert any("courier's photo" in n["body"] and n["body"].startswith("The shopper appealed") for n in page["notes"])
    assert kinds(api, case_id)[-2:] == ["case_reopened", "case_appealed"]
    assert bundle_problems(api, case_id) == []  # the appeal's note is borne out by its event
    events = outbox(api, "assessment.outcome", assessment_id=denied["assessment_id"])
    assert [e["outcome"]["status"] for e in events if e["outcome"]["appealed"]] == ["pending_review"]
    foreign = create_key(api.service.uow(), "scoring", "another store", "test")
    other = api.client.post(f"/v1/assessments/{denied['assessment_id']}/appeal", json={"message": "x"},
                            headers={"Authorization": f"Bearer {foreign}"})
    assert other.status_code == 404
    empty = api.client.post(f"/v1/assessments/{denied['assessment_id']}/appeal", json={"message": "  "},
                            headers=api.headers())
    assert empty.status_code == 422 and empty.get_json()["problems"][0]["field"] == "message"
    closed = post(api, f"/v1/cases/{case_id}/close", {"label": "legit", "reason": "photo checks out"})
    assert closed.status_code == 200 and closed.get_json()["appealed_at"] is None
    final = outcome(api, denied["assessment_id"])
    assert (final["status"], final["decision"], final["appealed"]) == ("final", "approve", False)
    changes = outbox(api, "assessment.outcome", assessment_id=denied["assessment_id"])
    assert len(changes) >= 2 and len({c["sequence"] for c in changes}) == len(changes)
    latest = max(changes, key=lambda c: c["sequence"])  # what a receiver keeps, in whatever order they came
    assert latest["outcome"] == {k: final[k] for k in latest["outcome"]}


def test_the_same_appeal_again_while_pending_is_a_replay_and_new_words_are_a_new_appeal(
        api: Api, set_policy: Any) -> None:
    """The returns system resends an appeal whose answer it lost: one note, one event, one outcome message. New
    words while it is pending are kept; the same words after the case was closed are a new appeal."""
    denied = assessed(api, set_policy, "deny")
    case_id, path = denied["case_id"], f"/v1/assessments/{denied['assessment_id']}/appeal"

    def appeal(message: str) -> dict[str, Any]:
        answer = api.client.post(path, json={"message": message}, headers=api.headers())
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    def appeal_notes() -> list[str]:
        page = api.client.get(f"/v1/cases/{case_id}", headers=api.headers("analyst")).get_json()
        return [n["body"] for n in page["notes"] if n["body"].startswith("The shopper appealed")]

    def appealed_outcomes() -> int:
        found = outbox(api, "assessment.outcome", assessment_id=denied["assessment_id"])
        return sum(e["outcome"]["appealed"] for e in found)

    first = appeal("The parcel was full.")
    again = appeal("  The parcel was full.\n")  # the same words, as the shopper's form sends them
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["outcome"] == first["outcome"] and again["case_id"] == first["case_id"] == case_id
    assert len(appeal_notes()) == 1 and kinds(api, case_id).count("case_appealed") == 1
    assert appealed_outcomes() == 1
    other = appeal("I also have the courier's photo.")
    assert other["replayed"] is False and len(appeal_notes()) == 2
    assert kinds(api, case_id).count("case_appealed") == 2
    assert post(api, f"/v1/cases/{case_id}/close", {"label": "fraud", "reason": "the photo is of another box"}
                ).status_code == 200
    after = appeal("The parcel was full.")
    assert after["replayed"] is False and len(appeal_notes()) == 3
    assert (after["outcome"]["status"], after["outcome"]["appealed"]) == ("pending_review", True)
    earlier = appeal("I also have the courier's photo.")  # words of the closed round, in the new one: kept
    assert earlier["replayed"] is False and len(appeal_notes()) == 4


def test_webhooks_are_managed_by_admins_and_refuse_unsafe_addresses(api: Api) -> None:
    admin = api.headers("admin")
    assert api.client.post("/v1/webhooks", json={"url": "https://example.invalid/", "events": ["case.closed"]},
                           headers=api.headers("analyst")).status_code == 403
    for url, words in (("http://169.254.169.254/latest", "link-local"), ("http://127.0.0.1:9/hook", "ALLOW_PRIVATE"),
                       ("ftp://example.com/", "http or https"), ("http://u:p@127.0.0.1/", "password"),
                       ("http://[::ffff:169.254.169.254]/", "link-local"), ("http://10.0.0.8/", "private"),
                       ("http://100.64.0.1/", "not a public address"), ("http://[2002:a9fe:a9fe::1]/", "metadata"),
                       ("http://[fec0::1]/", "not a public address"), ("http://8.8.8.8/a b", "percent-encode")):
        refused = api.client.post("/v1/webhooks", json={"url": url, "events": ["case.closed"]}, headers=admin)
        assert refused.status_code == 422, url
        assert words in refused.get_json()["problems"][0]["problem"], refused.get_json()
    bad_events = api.client.post("/v1/webhooks", json={"url": "http://[::1]/", "events": ["everything"]},
                                 headers=admin)
    assert bad_events.status_code == 422 and "events[0]" in {p["field"] for p in bad_events.get_json()["problems"]}
    assert api.client.delete("/v1/webhooks/whk_none", headers=admin).status_code == 404
    assert api.client.get("/v1/webhooks/whk_none/deliveries", headers=admin).status_code == 404
    assert api.client.post("/v1/webhooks/events/evt_none/replay", headers=admin).status_code == 404
    for limit in ("%C2%B2", "%E2%91%A0", "%D9%A3", "x", "0"):  # superscript, circled and Arabic-Indic digits
        odd = api.client.get(f"/v1/webhooks/whk_none/deliveries?limit={limit}", headers=admin)
        assert odd.status_code in (404, 422), (limit, odd.status_code)  # never a 500
    assert api.client.get("/v1/cases/cas_none?assessments_offset=%C2%B2",
                          headers=api.headers("analyst")).status_code == 422


def test_an_outcome_event_is_stored_with_one_delivery_per_webhook_that_takes_it(api: Api, set_policy: Any) -> None:
    from fraud_service.feedback import webhooks

    hook, secret = webhooks.add(api.service.uow(), url="http://127.0.0.1:9/outcomes",
                                events=["assessment.outcome"], actor="test", allow_private=True)
    listed = api.client.get("/v1/webhooks", headers=api.headers("admin")).get_json()["webhooks"]
    assert hook.id in {h["id"] for h in listed} and all("secret" not in h for h in listed)
    assert secret.startswith("whsec_")
    try:
        got = assessed(api, set_policy, "review")
        assert post(api, f"/v1/cases/{got['case_id']}/close", {"label": "legit", "reason": "fine"}).status_code == 200
        [event] = outbox(api, "assessment.outcome", assessment_id=got["assessment_id"])
        with api.service.sessions() as session:
            deliveries = session.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.status)
                                         .where(WebhookDelivery.event_id == event["_id"])).all()
        assert [tuple(d) for d in deliveries] == [(hook.id, "pending")]  # case.closed is not one it takes
        shown = api.client.get(f"/v1/webhooks/{hook.id}/deliveries?status=pending",
                               headers=api.headers("admin")).get_json()["deliveries"]
        assert event["_id"] in {d["event_id"] for d in shown}
        [closed] = outbox(api, "case.closed", case_id=got["case_id"])
        wrong = api.client.post(f"/v1/webhooks/events/{closed['_id']}/replay?webhook_id={hook.id}",
                                headers=api.headers("admin"))
        assert wrong.status_code == 422 and "takes assessment.outcome" in wrong.get_json()["problems"][0]["problem"]
    finally:
        assert api.client.delete(f"/v1/webhooks/{hook.id}", headers=api.headers("admin")).status_code == 204


def test_admins_see_dead_deliveries_in_the_ui_and_send_them_again(api: Api) -> None:
    from fraud_service.feedback import webhooks
    from fraud_service.feedback.dispatch import Dispatcher
    from tests.api.test_ui import person, signed_in

    hook, _ = webhooks.add(api.service.uow(), url="http://127.0.0.1:9/nobody-listens", events=["case.closed"],
                           actor="test", allow_private=True)
    try:
        with api.service.uow() as uow:
            event_id = webhooks.Outbox(uow.session, dt.datetime.now(dt.UTC), retry_hours=1e-9).emit(
                "case.closed", {"case_id": "cas_ui"})
            uow.commit()
        sender = Dispatcher(api.service.uow, allow_private=True, timeout_s=2)
        try:
            assert sender.run_once(wait=True) >= 1  # refused at once, and the window is over: dead
        finally:
            sender.close()
        analyst, _ = signed_in(api, person(api, "ana"))
        assert analyst.get("/ui/webhooks").status_code == 403
        admin, csrf = signed_in(api, person(api, "root", "admin"))
        page = admin.get("/ui/webhooks").get_data(as_text=True)
        assert hook.id in page and event_id in page and "Send again" in page
        sent = admin.post("/ui/webhooks/replay", data={"event_id": event_id, "webhook_id": hook.id, "csrf_token": csrf})
        assert sent.status_code == 302
        [again] = webhooks.deliveries(api.service.uow(), webhook_id=hook.id)
        assert (again.event_id, again.status, again.attempts) == (event_id, "pending", 0)
        assert f'value="{event_id}"' not in admin.get("/ui/webhooks").get_data(as_text=True)  # no longer dead
    finally:
        webhooks.remove(api.service.uow(), webhook_id=hook.id, actor="test")


def test_the_queue_page_marks_an_appealed_case(api: Api, set_policy: Any) -> None:
    from tests.api.test_ui import person, signed_in

    denied = assessed(api, set_policy, "review")
    appeal = api.client.post(f"/v1/assessments/{denied['assessment_id']}/appeal", json={"message": "Please look again"},
                             headers=api.headers())
    assert appeal.status_code == 200
    client, _ = signed_in(api, person(api, "ana"))
    queue = client.get("/ui/?limit=500").get_data(as_text=True)
    rows = queue.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("</tr>")
    ours = next(i for i, row in enumerate(rows) if denied["case_id"] in row)
    assert all(">appealed</span>" in row for row in rows[:ours + 1])  # badged, and only appealed cases ahead
    page = client.get(f"/ui/cases/{denied['case_id']}").get_data(as_text=True)
    assert "appealed by the shopper" in page and "Please look again" in page



def test_a_worker_sends_webhooks_only_once_it_has_loaded_and_warmed_up(
        serving_home: Any, trained_world: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `serve` worker's webhook sender started first thing, before the worker checked the schema, loaded the model
    and warmed up: deliveries went out from a worker that took no request yet (and may never: gunicorn kills one
    that boots too long, an app may fail to build). Now the sender starts once the rest is built."""
    import contextlib
    import threading

    from fraud_service import bootstrap
    from fraud_service.config import Settings
    from fraud_service.feedback import webhooks
    from tests.feedback.test_delivery import Receiver, emit, status, until

    settings = Settings.from_env({"FRAUD_HOME": str(serving_home), "FRAUD_WEBHOOK_ALLOW_PRIVATE": "true",
                                  "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}"})
    receiver = Receiver()
    with bootstrap.evidence(settings, migrated=False) as db:
        db.upgrade()
        hook, _ = webhooks.add(db.uow(), url=receiver.url, events=["case.closed"], actor="test", allow_private=True)
        event_id = emit(db.uow, closed_by="user:ana")  # waiting in the outbox as the worker starts
    already = set(threading.enumerate())
    got_while_warming: list[int] = []
    warm = bootstrap.warm

    def warming(assessor: Any) -> None:
        senders = [t for t in threading.enumerate() if t not in already and t.name == "webhook-dispatcher"]
        if senders:  # a sender runs already: it delivers within milliseconds (waiting for that, not timing it)
            with contextlib.suppress(AssertionError):
                until(lambda: receiver.got, 10)
        got_while_warming.append(len(receiver.got))
        warm(assessor)

    monkeypatch.setattr(bootstrap, "warm", warming)
    service = bootstrap.build(settings, freshness=False, watch=False, dispatch=True, assign=False)
    try:
        assert service.assessor is not None and got_while_warming == [0]
        until(lambda: receiver.got, 10)  # and once built, it sends
        [(headers, body)] = receiver.got
        assert headers["Fraud-Event-Id"] == event_id and json.loads(body)["data"]["closed_by"] == "user:ana"
        until(lambda: status(service.uow, event_id) == {hook.id: "delivered"}, 10)
    finally:
        service.close()
        receiver.close()


def test_a_worker_on_an_unmigrated_database_sends_no_webhooks_and_one_without_a_model_does(settings: Any) -> None:
    """Never ready, its schema not this code's: no sender (it failed every round, its tables not the ones it
    writes). A worker that cannot score still sends once built: closing cases and inspections need no model."""
    from fraud_service import bootstrap

    stale = bootstrap.build(settings, dispatch=True, assign=True)
    try:
        assert stale.dispatcher is None and stale.assigner is None  # the queues' assigner neither (it was started)
        assert "the evidence database is at schema none" in stale.problems[0]
    finally:
        stale.close()
    with bootstrap.evidence(settings, migrated=False) as db:
        db.upgrade()
    modelless = bootstrap.build(settings, dispatch=True, assign=False)
    try:
        assert modelless.assessor is None and modelless.dispatcher is not None
        assert modelless.problems == ["the feature store is not built: run `fraud-service features build` and "
                                      "`fraud-service features materialize`"]
    finally:
        modelless.close()
