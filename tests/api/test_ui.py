"""The analyst UI through the Flask test client: sign-in, sessions, CSRF, the queue, the case page and its forms."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import pyotp
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from fraud_service.access import totp
from fraud_service.access.users import create_user
from fraud_service.cases.service import assign, claim, close, disable_user, reopen
from fraud_service.errors import CaseConflict
from fraud_service.store.schema import Case, CaseNote, EvidenceEvent, Label, User
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PASSWORD = "a long enough password"
AUTHENTICATORS: dict[tuple[int, str], tuple[str, list[str]]] = {}
"""What each person `enrol` turned two-factor sign-in on for holds: the secret and the recovery codes left, by
(the id of the app's service, name)."""


def person(api: Api, name: str, role: str = "analyst") -> str:
    """NAME, made with PASSWORD if new; an admin is made with two-factor sign-in on, as admins must have it."""
    with api.service.sessions() as session:
        exists = session.get(User, name) is not None
    if not exists:
        create_user(api.service.uow(), name, role, PASSWORD, "test")
        if role == "admin":
            enrol(api, name)
    return name


def app_key(api: Api) -> bytes:
    key = api.app.secret_key
    assert isinstance(key, bytes)
    return key


def enrol(api: Api, name: str) -> str:
    """Turn NAME's two-factor sign-in on as of a minute ago (so the codes of now are unused); its secret."""
    secret = totp.begin(api.service.uow(), name, app_key(api)).secret
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    codes = totp.confirm(api.service.uow(), name, pyotp.TOTP(secret).at(before), app_key(api), now=before)
    AUTHENTICATORS[(id(api.service), name)] = (secret, codes)
    return secret


def second_factor(api: Api, name: str) -> str:
    """A code NAME's app shows now (or at the next step) that the service has not accepted yet; a recovery code
    when both were used (a third sign-in within one step)."""
    secret, codes = AUTHENTICATORS[(id(api.service), name)]
    with api.service.sessions() as session:
        user = session.get(User, name)
        assert user is not None
        last = -1 if user.totp_last_step is None else user.totp_last_step
    now = int(time.time()) // 30
    for step in (now, now + 1):
        if step > last:
            return pyotp.TOTP(secret).at(step * 30)
    return codes.pop()


def token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def signed_in(api: Api, name: str) -> tuple[FlaskClient, str]:
    """A browser signed in as NAME (with a code after the password when NAME has two-factor sign-in on), and its
    session's CSRF token."""
    client = api.app.test_client()
    page = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page)})
    if response.headers.get("Location", "").endswith("/ui/login/code"):
        page = client.get("/ui/login/code").get_data(as_text=True)
        response = client.post("/ui/login/code", data={"code": second_factor(api, name), "csrf_token": token(page)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/")
    return client, token(client.get("/ui/").get_data(as_text=True))


def test_pages_need_a_signed_in_person(api: Api) -> None:
    client = api.app.test_client()
    response = client.get("/ui/")
    assert response.status_code == 302 and "/ui/login" in response.headers["Location"]
    assert client.get("/ui/cases/cas_x", headers=api.headers("admin")).status_code == 302  # keys do not sign in
    name = person(api, "erin")
    page = client.get("/ui/login").get_data(as_text=True)
    wrong = client.post("/ui/login", data={"name": name, "password": "not it at all", "csrf_token": token(page)})
    assert wrong.status_code == 401 and "wrong password" in wrong.get_data(as_text=True)
    unknown = client.post("/ui/login", data={"name": "nobody", "password": PASSWORD, "csrf_token": token(page)})
    assert unknown.status_code == 401
    assert client.get("/ui/").status_code == 302
    evil = client.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page),
                                          "next": "//evil.example/ui/"})
    assert evil.headers["Location"] == "/ui/"  # never sent elsewhere after signing in


def test_forms_without_the_session_token_change_nothing(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy)
    client, csrf = signed_in(api, person(api, "frank"))
    for data in ({"body": "sneaky"}, {"body": "sneaky", "csrf_token": "forged"}):
        response = client.post(f"/ui/cases/{case_id}/notes", data=data)
        assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    other = api.app.test_client()  # another browser's token is not this session's
    other_token = token(other.get("/ui/login").get_data(as_text=True))
    assert client.post(f"/ui/cases/{case_id}/notes", data={"body": "x", "csrf_token": other_token}).status_code == 400
    with api.service.sessions() as session:
        assert session.execute(select(CaseNote).where(CaseNote.case_id == case_id)).first() is None
    assert client.post(f"/ui/cases/{case_id}/notes", data={"body": "real", "csrf_token": csrf}).status_code == 302


def test_queue_case_page_and_decision_through_the_forms(api: Api, set_policy: Any) -> None:
    case_id, returns = open_case(api, set_policy, returns=2, amount=50_000.0)
    client, csrf = signed_in(api, person(api, "gwen"))
    queue = client.get("/ui/?status=open&min_amount=40000").get_data(as_text=True)
    assert case_id in queue and "Case queue" in queue
    assert client.get("/ui/?limit=nine").status_code == 200  # a bad filter is explained, not a crash
    page = client.get(f"/ui/cases/{case_id}").get_data(as_text=True)
    for part in ("SHAP contributions", "<svg", "Linked accounts", "History of", "Evidence timeline", *returns):
        assert part in page, part
    evidence = re.findall(r'href="([^"]+)">stored evidence \(JSON\)', page)
    assert len(evidence) == 2  # one per assessment; they were /v1/ links, which take a key, not this session
    stored = client.get(evidence[0])
    assert stored.status_code == 200 and stored.get_json()["response"]["return_id"] in returns
    assert client.get("/ui/assessments/asm_none").status_code == 404
    assert api.app.test_client().get(evidence[0]).status_code == 302  # signed out: to the sign-in page
    assert client.get("/ui/cases/cas_nothing").status_code == 404

    assert client.post(f"/ui/cases/{case_id}/claim", data={"csrf_token": csrf}).status_code == 302
    client.post(f"/ui/cases/{case_id}/notes", data={"body": "Called the courier: delivered.", "csrf_token": csrf})
    long = client.post(f"/ui/cases/{case_id}/status", data={"csrf_token": csrf, "status": "escalated",
                                                            "comment": "x" * 20_000}, follow_redirects=True)
    assert "comment" in long.get_data(as_text=True) and "at most 2,000 characters" in long.get_data(as_text=True)
    with api.service.sessions() as session:
        assert session.get(Case, case_id).status != "escalated"  # type: ignore[union-attr]  # the API's bound too
    incomplete = client.post(f"/ui/cases/{case_id}/close", data={"csrf_token": csrf, "reason": "x",
                                                                 f"label:{returns[0]}": "fraud"},
                             follow_redirects=True)
    assert f"dispositions.{returns[1]}" in incomplete.get_data(as_text=True)
    client.post(f"/ui/cases/{case_id}/close", data={"csrf_token": csrf, "reason": "INR claim after delivery",
                                                    f"label:{returns[0]}": "fraud", f"label:{returns[1]}": "fraud"})
    with api.service.sessions() as session:
        case = session.get(Case, case_id)
        assert case is not None and (case.status, case.assignee) == ("closed", "user:gwen")
        labels = session.execute(select(Label.return_id, Label.label, Label.actor).where(Label.case_id == case_id)
                                 ).tuples().all()
    assert sorted(labels) == sorted((r, "fraud", "user:gwen") for r in returns)
    closed_page = client.get(f"/ui/cases/{case_id}").get_data(as_text=True)
    assert "Reopen" in closed_page and "Add note" not in closed_page
    late = client.post(f"/ui/cases/{case_id}/notes", data={"body": "late", "csrf_token": csrf}, follow_redirects=True)
    assert "reopen it to change it" in late.get_data(as_text=True)
    assert client.get(f"/ui/cases/{case_id}/bundle").status_code == 405  # a GET changes nothing
    assert client.post(f"/ui/cases/{case_id}/bundle").status_code == 400  # no CSRF token: nothing exported
    exported = client.post(f"/ui/cases/{case_id}/bundle", data={"csrf_token": csrf})
    assert exported.mimetype == "application/zip" and len(exported.headers["X-Bundle-SHA256"]) == 64
    assert client.post("/ui/cases/cas_nothing/bundle", data={"csrf_token": csrf}).status_code == 404


def test_a_disabled_person_is_signed_out_and_their_cases_go_back_unassigned(api: Api, set_policy: Any) -> None:
    (given, _), (claimed, _), (decided, _) = (open_case(api, set_policy) for _ in range(3))
    name = person(api, "hank")
    client, _ = signed_in(api, name)
    assert client.get("/ui/").status_code == 200
    assign(api.service.uow(), case_id=given, assignee=f"user:{name}", actor="user:lead")
    claim(api.service.uow(), case_id=claimed, actor=f"user:{name}")  # in review: "next case" takes only open ones
    claim(api.service.uow(), case_id=decided, actor=f"user:{name}")
    close(api.service.uow(), case_id=decided, dispositions=None, label="legit", reason="fine", actor=f"user:{name}")
    assert disable_user(api.service.uow(), name, "test") == sorted([given, claimed])
    assert client.get("/ui/").status_code == 302
    with api.service.sessions() as session:
        states = {c: (session.get(Case, c).status, session.get(Case, c).assignee)  # type: ignore[union-attr]
                  for c in (given, claimed, decided)}
        kinds = session.execute(select(EvidenceEvent.kind, EvidenceEvent.payload).where(
            EvidenceEvent.kind.in_(("case_assigned", "user_disabled"))).order_by(EvidenceEvent.seq)).all()
    assert states == {given: ("open", None), claimed: ("open", None), decided: ("closed", f"user:{name}")}
    assert [k for k, _ in kinds[-3:]] == ["user_disabled", "case_assigned", "case_assigned"]
    released = {json.loads(p)["case_id"]: json.loads(p) for _, p in kinds[-2:]}
    assert released[claimed]["changes"] == {"assignee": [f"user:{name}", None], "status": ["in_review", "open"]}
    assert released[given]["why"] == "user_disabled" and "status" not in released[given]["changes"]
    assert disable_user(api.service.uow(), name, "test") == []  # once disabled, nothing more happens
    reopened = reopen(api.service.uow(), case_id=decided, reason="new evidence", actor="user:lead")
    assert reopened.assignee is None  # who decided it can no longer sign in
    with pytest.raises(CaseConflict, match="is disabled"):  # a page loaded before the disable, sent after it
        claim(api.service.uow(), case_id=given, actor=f"user:{name}")


def test_a_signed_in_person_sees_the_status_detail_a_stranger_does_not(api: Api) -> None:
    client, _ = signed_in(api, person(api, "stan"))
    assert "fingerprint" in client.get("/v1/status").get_json()  # as docs/api.md says: a key or a signed-in person
    stranger = api.app.test_client().get("/v1/status").get_json()
    assert "fingerprint" not in stranger
    assert stranger["model"]["version"] == api.service.assessor.scorer.version  # as /readyz says to anyone
    assert f"Scoring with model <strong>{stranger['model']['version']}</strong>" in \
        api.app.test_client().get("/").get_data(as_text=True)


def test_an_unexpected_error_on_a_page_is_a_page_naming_the_request_id(api: Api,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: str) -> None:
        raise RuntimeError("a bug")

    client, _ = signed_in(api, person(api, "ivy"))
    monkeypatch.setattr("api.entities.found", broken)
    page = client.get("/ui/search?q=x", headers={"Accept": "text/html"})
    assert page.status_code == 500 and page.mimetype == "text/html"  # was the API's JSON
    assert page.headers["X-Request-ID"] in page.get_data(as_text=True) and "a bug" not in page.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/ui/login", "/ui/", "/", "/healthz"])
def test_every_page_forbids_framing_sniffing_and_foreign_or_inline_script(api: Api, path: str) -> None:
    response = api.client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in \
        csp.split("script-src")[1].split(";")[0]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_no_page_carries_inline_script(api: Api, set_policy: Any) -> None:
    case_id, _ = open_case(api, set_policy)
    client, _ = signed_in(api, person(api, "ines"))
    for path in ("/ui/", f"/ui/cases/{case_id}", "/ui/login"):
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path


def test_signing_out_ends_the_session_on_the_server_not_only_in_the_browser(api: Api) -> None:
    client, csrf = signed_in(api, person(api, "olga"))
    copied = client.get_cookie("fraud_session")
    assert copied is not None
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 302
    replayed = api.app.test_client()
    replayed.set_cookie("fraud_session", copied.value)
    response = replayed.get("/ui/")
    assert response.status_code == 302 and "/ui/login" in response.headers["Location"]


def test_guessing_passwords_is_slowed_then_refused(api: Api) -> None:
    name = person(api, "pia")
    client = api.app.test_client()
    client.environ_base["REMOTE_ADDR"] = "198.51.100.7"  # an address of its own: other tests sign in from theirs
    page = client.get("/ui/login").get_data(as_text=True)
    for _ in range(3):
        wrong = client.post("/ui/login", data={"name": name, "password": "guess guess", "csrf_token": token(page)})
        assert wrong.status_code == 401
    blocked = client.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page)})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    assert "too many failed sign-ins" in blocked.get_data(as_text=True)


def test_behind_a_proxy_one_address_guessing_passwords_does_not_throttle_everyone(api: Api) -> None:
    """Behind a load balancer every request comes from its address: three wrong passwords from anywhere made every
    person's sign-in wait, ten locked everyone out for 15 minutes. With FRAUD_TRUSTED_PROXIES the address counted is
    the one the proxy saw; without it the header is ignored (a client could write anything there)."""
    import dataclasses

    from api.app import create_app

    name = person(api, "quinn")
    for proxies, attacker, honest, expected in ((1, "203.0.113.66", "198.51.100.77", 302),
                                               (0, "203.0.113.67", "198.51.100.78", 429)):
        app = create_app(dataclasses.replace(api.service.settings, trusted_proxies=proxies),
                         {"SERVICE": api.service, "TESTING": True})
        balancer = {"REMOTE_ADDR": f"192.0.2.{10 + proxies}"}  # the load balancer, one per round
        guesser, person_ = app.test_client(), app.test_client()
        guesser.environ_base.update(balancer)
        person_.environ_base.update(balancer)
        page = guesser.get("/ui/login").get_data(as_text=True)
        for _ in range(3):
            wrong = guesser.post("/ui/login", data={"name": f"nobody-{proxies}", "password": "guess guess",
                                                    "csrf_token": token(page)},
                                 headers={"X-Forwarded-For": f"10.9.9.9, {attacker}"})
            assert wrong.status_code == 401
        page = person_.get("/ui/login").get_data(as_text=True)
        answer = person_.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page)},
                              headers={"X-Forwarded-For": honest})
        assert answer.status_code == expected, (proxies, answer.status_code)


def test_the_session_cookie_is_secure_when_configured(api: Api) -> None:
    import dataclasses

    from api.app import create_app

    secure = create_app(dataclasses.replace(api.service.settings, cookie_secure=True),
                        {"SERVICE": api.service, "TESTING": True})
    response = secure.test_client().get("/ui/login")
    assert "Secure" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]
    assert "Secure" not in api.client.get("/ui/login").headers.get("Set-Cookie", "")


def test_a_case_page_shows_a_hundred_returns_at_a_time_and_closes_them_all(api: Api, set_policy: Any) -> None:
    case_id, returns = open_case(api, set_policy, returns=103)
    client, csrf = signed_in(api, person(api, "quin"))
    page = client.get(f"/ui/cases/{case_id}").get_data(as_text=True)
    assert "103 returns in this case" in page and "showing\n      1–100" in page
    assert "assessments_offset=100" in page and 'name="label"' in page
    rest = client.get(f"/ui/cases/{case_id}?assessments_offset=100").get_data(as_text=True)
    assert "101–103" in rest and returns[-1] in rest
    assert client.get(f"/ui/cases/{case_id}?assessments_offset=x").status_code == 400
    api_page = api.client.get(f"/v1/cases/{case_id}?assessments_offset=100", headers=api.headers("analyst"))
    assert [a["return_id"] for a in api_page.get_json()["assessment_list"]] == returns[100:]
    assert api_page.get_json()["assessments_total"] == 103
    closed = client.post(f"/ui/cases/{case_id}/close", data={"csrf_token": csrf, "label": "abuse",
                                                             "reason": "serial returner"}, follow_redirects=True)
    assert "Case closed" in closed.get_data(as_text=True)
    with api.service.sessions() as session:
        assert len(session.execute(select(Label).where(Label.case_id == case_id)).all()) == 103


@pytest.mark.parametrize("stamped_early", [False, True])
def test_a_bulk_close_from_a_queue_page_loaded_before_an_appeal_closes_nothing(
        api: Api, set_policy: Any, stamped_early: bool) -> None:
    """The queue's bulk close ignored what changed after the page was loaded: an appeal that came in meanwhile was
    closed over unseen. Then the page sent when it was loaded; but a change stamps the case's `updated_at` before it
    commits (an appeal waiting for the write lock, a new return joining the case), so one committed after the page
    was loaded could carry an earlier time and pass (STAMPED_EARLY; a helper's red-team run). The page now sends each
    case's `updated_at` as it showed it, and any difference refuses the close."""
    import datetime as dt
    import json

    from tests.api.test_cases_api import events

    first, _ = open_case(api, set_policy)
    second, _ = open_case(api, set_policy)
    client, _ = signed_in(api, person(api, "hana"))
    loaded = api.service.clock()
    page = client.get("/ui/?limit=500").get_data(as_text=True)
    assert f'name="seen" value="{second} ' in page
    assessment = json.loads(events(api, second)[0].payload)["assessment_id"]
    clock = api.service.clock
    if stamped_early:
        api.service.clock = lambda: loaded - dt.timedelta(seconds=2)  # its time taken before the page, committed after
    try:
        assert api.client.post(f"/v1/assessments/{assessment}/appeal", json={"message": "it was full"},
                               headers=api.headers()).status_code == 200
    finally:
        api.service.clock = clock
    closed = client.post("/ui/bulk-close", data={"case_id": [first, second], "label": "fraud", "reason": "ring",
                                                 "seen": re.findall(r'name="seen" value="([^"]+)"', page),
                                                 "csrf_token": token(page)}, follow_redirects=True)
    assert "Nothing was closed" in closed.get_data(as_text=True) and second in closed.get_data(as_text=True)
    with api.service.sessions() as session:
        assert {session.get(Case, c).status for c in (first, second)} == {"open"}  # type: ignore[union-attr]
    again = client.get("/ui/?limit=500").get_data(as_text=True)  # reloaded: the appeal is seen, and it may close
    closed = client.post("/ui/bulk-close", data={"case_id": [first, second], "label": "fraud", "reason": "ring",
                                                 "seen": re.findall(r'name="seen" value="([^"]+)"', again),
                                                 "csrf_token": token(again)}, follow_redirects=True)
    assert "Closed 2 case(s) as fraud" in closed.get_data(as_text=True), closed.get_data(as_text=True)[-2000:]


DIGITS = "1" * 5000
"""A number Python refuses to read with int() (over 4,300 digits): a form field or query argument of it was a 500."""


def test_a_number_of_thousands_of_digits_on_an_admin_page_is_named_not_a_500(api: Api) -> None:
    client, csrf = signed_in(api, person(api, "ursa", "admin"))
    for path in (f"/ui/dashboard?days={DIGITS}", f"/ui/monitor?days={DIGITS}"):
        response = client.get(path)
        assert response.status_code == 200, path[:30]  # the default window, as for any other days it does not offer
    for field in ("days", "rows"):
        response = client.post("/ui/rules", data={"csrf_token": csrf, "action": "backtest", field: DIGITS})
        assert response.status_code == 200, field
        assert "rules.builtin.refund_exceeds_order.threshold" in response.get_data(as_text=True)  # checks ran
    response = client.post("/ui/rules", data={"csrf_token": csrf, "action": "backtest", "days": DIGITS})
    assert "days: got &#39;1111111111" in response.get_data(as_text=True)


def test_the_queue_pages_links_carry_only_its_own_query_fields(api: Api, set_policy: Any) -> None:
    """The previous/next links passed every query key to url_for: `endpoint` or `_method` was a 500, `_external`
    and `_anchor` reshaped the links (a helper's fuzzing of the analyst pages)."""
    for _ in range(3):
        open_case(api, set_policy)
    client, _ = signed_in(api, person(api, "hana"))
    for extra in ("endpoint=x", "_method=POST", "_external=1", "_anchor=top", "_scheme=https"):
        page = client.get(f"/ui/?limit=1&offset=1&status=open&status=in_review&sort=age&{extra}")
        assert page.status_code == 200, extra
        links = re.findall(r'href="(/ui/\?[^"]*)">(?:← previous|next →)', page.get_data(as_text=True))
        assert len(links) == 2, extra
        for link, offset in zip(links, (0, 2), strict=True):  # previous, then next
            query = link.split("?", 1)[1].replace("&amp;", "&").split("&")
            assert sorted(query) == sorted(["limit=1", "status=open", "status=in_review", "sort=age",
                                            f"offset={offset}"]), link
