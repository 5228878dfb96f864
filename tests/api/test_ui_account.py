"""Two-factor sign-in through the Flask test client: turning it on in two steps, the code page after the password,
codes never accepted twice, recovery codes, the half-way state lapsing, throttling, CSRF, and admins held at the
enrolment page until it is on."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from fraud_service.access.users import create_user
from fraud_service.data.warehouse import Warehouse
from fraud_service.store.schema import Case, EvidenceEvent, User
from tests.api.conftest import Api
from tests.api.test_ui import AUTHENTICATORS, PASSWORD, enrol, person, signed_in, token

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def password_step(api: Api, name: str, next_page: str = "", address: str = "") -> tuple[FlaskClient, str]:
    """A browser that gave NAME's password: it stands at the code page; that page's CSRF token."""
    client = api.app.test_client()
    if address:
        client.environ_base["REMOTE_ADDR"] = address
    page = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page),
                                              "next": next_page})
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login/code")
    return client, token(client.get("/ui/login/code").get_data(as_text=True))


def turn_on(client: FlaskClient, csrf: str) -> tuple[str, list[str], str]:
    """Turn two-factor sign-in on through the pages; the secret the page showed, the recovery codes and the code
    that turned it on."""
    assert client.post("/ui/two-factor/begin", data={"csrf_token": csrf}).status_code == 302
    page = client.get("/ui/two-factor").get_data(as_text=True)
    found = re.search(r"otpauth://totp/fraud-service:[^\"<]*secret=([A-Z2-7]+)", page)
    assert found and "Step 2 of 2" in page, page
    secret = found.group(1)
    assert " ".join(secret[i:i + 4] for i in range(0, len(secret), 4)) in page  # grouped for typing by hand
    wrong = client.post("/ui/two-factor/confirm", data={"code": "000000", "csrf_token": csrf}, follow_redirects=True)
    assert "does not match the secret" in wrong.get_data(as_text=True)
    first = pyotp.TOTP(secret).now()
    done = client.post("/ui/two-factor/confirm", data={"code": first, "csrf_token": csrf})
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    html = done.get_data(as_text=True)
    assert "shown only this once" in html and "Two-factor sign-in is on" in html
    return secret, re.findall(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>", html), first


def kinds(api: Api, name: str) -> list[str]:
    with api.service.sessions() as session:
        return list(session.execute(select(EvidenceEvent.kind).where(EvidenceEvent.subject == f"user:{name}")
                                    .order_by(EvidenceEvent.seq)).scalars())


def test_an_analyst_turns_it_on_then_signs_in_with_a_code_after_the_password(api: Api) -> None:
    client, csrf = signed_in(api, person(api, "tomas"))
    assert 'href="/ui/two-factor"' in client.get("/ui/").get_data(as_text=True)  # in the header
    assert "make a key" in client.get("/ui/two-factor").get_data(as_text=True)
    secret, codes, first = turn_on(client, csrf)
    assert len(codes) == len(set(codes)) == 10
    assert "10 recovery code(s) left" in client.get("/ui/two-factor").get_data(as_text=True)  # never the codes again
    assert not any(c in client.get("/ui/two-factor").get_data(as_text=True) for c in codes)

    half, half_csrf = password_step(api, "tomas", next_page="/ui/?status=closed")
    assert half.get("/ui/").status_code == 302  # not signed in by the password alone
    used = half.post("/ui/login/code", data={"code": first, "csrf_token": half_csrf})
    assert used.status_code == 401 and "used already" in used.get_data(as_text=True)  # the code that turned it on
    later = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    answer = half.post("/ui/login/code", data={"code": later, "csrf_token": half_csrf})
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/?status=closed"
    assert half.get("/ui/").status_code == 200

    rescued, rescued_csrf = password_step(api, "tomas")
    assert rescued.post("/ui/login/code", data={"code": codes[0], "csrf_token": rescued_csrf}).status_code == 302
    again, again_csrf = password_step(api, "tomas", address="198.51.100.31")  # its failure stays off others' count
    assert again.post("/ui/login/code", data={"code": codes[0], "csrf_token": again_csrf}).status_code == 401
    assert kinds(api, "tomas") == ["user_created", "totp_enabled", "totp_recovery_code_used"]


def test_turning_it_off_needs_a_current_code(api: Api) -> None:
    name = person(api, "ursula")
    enrol(api, name)
    client, csrf = signed_in(api, name)
    secret, _ = AUTHENTICATORS[(id(api.service), name)]
    wrong = client.post("/ui/two-factor/disable", data={"code": "123456", "csrf_token": csrf}, follow_redirects=True)
    assert "wrong or was used already" in wrong.get_data(as_text=True)
    assert client.post("/ui/two-factor/disable", data={"code": "123456"}).status_code == 400  # no CSRF token
    code = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    off = client.post("/ui/two-factor/disable", data={"code": code, "csrf_token": csrf}, follow_redirects=True)
    assert "Two-factor sign-in is off" in off.get_data(as_text=True) and "make a key" in off.get_data(as_text=True)
    assert kinds(api, name)[-1] == "totp_disabled"
    signed_in(api, name)  # the password alone again


def test_an_admin_without_it_can_do_nothing_but_turn_it_on(api: Api) -> None:
    create_user(api.service.uow(), "vera", "admin", PASSWORD, "test")  # made before admins needed it
    client = api.app.test_client()
    page = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"name": "vera", "password": PASSWORD, "csrf_token": token(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/ui/two-factor"
    page = client.get("/ui/two-factor").get_data(as_text=True)
    assert "Admins must turn it on before anything else" in page
    assert "Next case" not in page and ">Monitor<" not in page  # the header offers nothing else
    csrf = token(page)
    for path in ("/ui/", "/ui/monitor", "/ui/webhooks", "/ui/cases/cas_x", "/ui/?status=closed"):
        held = client.get(path)
        assert held.status_code == 302 and held.headers["Location"] == "/ui/two-factor", path
    for path in ("/ui/next", "/ui/webhooks/replay", "/ui/bulk-close", "/ui/two-factor/disable"):
        held = client.post(path, data={"csrf_token": csrf, "event_id": "evt_x", "case_id": "cas_x", "label": "fraud"})
        assert held.status_code == 302 and held.headers["Location"] == "/ui/two-factor", path
    with api.service.sessions() as session:
        assert session.execute(select(Case).where(Case.assignee == "user:vera")).first() is None
    fingerprint = Warehouse(api.service.settings.warehouse_dir).current().manifest["fingerprint"]
    assert fingerprint not in client.get("/").get_data(as_text=True)  # the start page's details stay hidden

    turn_on(client, csrf)
    assert client.get("/ui/monitor").status_code == 200 and client.get("/ui/").status_code == 200
    assert fingerprint in client.get("/").get_data(as_text=True)
    assert kinds(api, "vera") == ["user_created", "totp_enabled"]


def test_the_half_way_state_lapses_after_five_minutes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    name = person(api, "wanda")
    secret = enrol(api, name)
    client, csrf = password_step(api, name)
    late = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5, seconds=2)
    monkeypatch.setattr(api.service, "clock", lambda: late)
    answer = client.post("/ui/login/code", data={"code": pyotp.TOTP(secret).at(late), "csrf_token": csrf})
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/login"
    assert "not finished within 5 minutes" in client.get("/ui/login").get_data(as_text=True)
    assert client.get("/ui/").status_code == 302
    assert client.get("/ui/login/code").headers["Location"] == "/ui/login"  # the half-way state is gone
    with api.service.sessions() as session:
        user = session.get(User, name)
        assert user is not None and user.totp_last_step is not None
        assert user.totp_last_step < int(late.timestamp()) // 30  # the late code was never checked


def test_the_half_way_state_lasts_almost_five_minutes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    name = person(api, "xenia")
    secret = enrol(api, name)
    client, csrf = password_step(api, name)
    slow = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4, seconds=50)
    monkeypatch.setattr(api.service, "clock", lambda: slow)
    answer = client.post("/ui/login/code", data={"code": pyotp.TOTP(secret).at(slow), "csrf_token": csrf})
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/"


def test_wrong_codes_are_throttled_with_the_passwords(api: Api) -> None:
    name = person(api, "yusuf")
    enrol(api, name)
    client, csrf = password_step(api, name, address="198.51.100.23")
    for _ in range(3):
        assert client.post("/ui/login/code", data={"code": "000000", "csrf_token": csrf}).status_code == 401
    blocked = client.post("/ui/login/code", data={"code": "111111", "csrf_token": csrf})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    assert "too many failed sign-ins" in blocked.get_data(as_text=True)
    other = api.app.test_client()  # the password from elsewhere waits too: the user's count is the same
    page = other.get("/ui/login").get_data(as_text=True)
    assert other.post("/ui/login", data={"name": name, "password": PASSWORD,
                                         "csrf_token": token(page)}).status_code == 429


def test_the_code_forms_need_the_session_token(api: Api) -> None:
    name = person(api, "zoltan")
    secret = enrol(api, name)
    client, _ = password_step(api, name)
    stranger = token(api.app.test_client().get("/ui/login").get_data(as_text=True))
    for data in ({"code": pyotp.TOTP(secret).now()}, {"code": pyotp.TOTP(secret).now(), "csrf_token": stranger}):
        assert client.post("/ui/login/code", data=data).status_code == 400
    analyst, _ = signed_in(api, person(api, "zara"))
    assert analyst.post("/ui/two-factor/begin", data={}).status_code == 400
    with api.service.sessions() as session:
        user = session.get(User, "zara")
        assert user is not None and user.totp_secret is None  # nothing was begun


def test_the_new_pages_carry_no_inline_script(api: Api) -> None:
    name = person(api, "yvonne")
    enrol(api, name)
    client, _ = password_step(api, name)
    pages = [client.get("/ui/login/code").get_data(as_text=True)]
    signed, csrf = signed_in(api, person(api, "yannick"))
    signed.post("/ui/two-factor/begin", data={"csrf_token": csrf})
    pages.append(signed.get("/ui/two-factor").get_data(as_text=True))
    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert not re.search(r"\son[a-z]+=", html)


def test_a_session_signed_in_before_two_factor_went_on_is_ended_when_it_does(api: Api) -> None:
    create_user(api.service.uow(), "yolanda", "admin", PASSWORD, "test")
    before = api.app.test_client()  # a stolen password, signed in while the admin has no second factor yet
    page = before.get("/ui/login").get_data(as_text=True)
    response = before.post("/ui/login", data={"name": "yolanda", "password": PASSWORD, "csrf_token": token(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/ui/two-factor"
    assert before.get("/ui/monitor").headers["Location"] == "/ui/two-factor"  # held at the enrolment page
    stolen = before.get_cookie("fraud_session")  # the attacker keeps the cookie, whatever a later answer sets
    assert stolen is not None

    owner = api.app.test_client()  # the admin signs in and turns it on
    page = owner.get("/ui/login").get_data(as_text=True)
    owner.post("/ui/login", data={"name": "yolanda", "password": PASSWORD, "csrf_token": token(page)})
    csrf = token(owner.get("/ui/two-factor").get_data(as_text=True))
    _, codes, _ = turn_on(owner, csrf)
    assert owner.get("/ui/monitor").status_code == 200  # the session that proved the code goes on

    held = before.get("/ui/monitor")  # the password-only session never gave a code: it is signed out
    assert held.status_code == 302 and "/ui/login" in held.headers["Location"]
    assert before.get("/ui/webhooks").status_code == 302 and before.get("/ui/two-factor").status_code == 302
    # to move to a new device the owner turns it off: the stolen session stayed out of reach only while it was on,
    # and came back to enrol its own authenticator before the owner could
    assert owner.post("/ui/two-factor/disable", data={"code": codes[0], "csrf_token": csrf}).status_code == 302
    before.set_cookie("fraud_session", stolen.value)
    back = before.get("/ui/two-factor")
    assert back.status_code == 302 and "/ui/login" in back.headers["Location"], back.headers.get("Location")


def test_a_person_changes_their_own_password_and_their_other_sessions_end(api: Api) -> None:
    """There was no way to change one's password: an admin had to disable the person and make a new name."""
    name = person(api, f"pw-{api.backend}")
    here, csrf = signed_in(api, name)
    elsewhere, _ = signed_in(api, name)
    assert "Change your password" in here.get("/ui/password").get_data(as_text=True)
    new = "a new and longer password"
    refused = [({"current": PASSWORD, "new": new, "again": new + "!"}, "repetition differ"),
               ({"current": "not my password", "new": new, "again": new}, "current password is not right"),
               ({"current": PASSWORD, "new": "short", "again": "short"}, "at least 10 are required"),
               ({"current": PASSWORD, "new": PASSWORD, "again": PASSWORD}, "new password is the current one")]
    for form, message in refused:
        answer = here.post("/ui/password", data={**form, "csrf_token": csrf})
        assert answer.status_code == 400 and message in answer.get_data(as_text=True), message
    assert here.post("/ui/password", data={"current": PASSWORD, "new": new, "again": new}).status_code == 400  # CSRF
    done = here.post("/ui/password", data={"current": PASSWORD, "new": new, "again": new, "csrf_token": csrf})
    assert done.status_code == 302 and done.headers["Location"].endswith("/ui/password")
    assert here.get("/ui/").status_code == 200  # this session goes on
    assert elsewhere.get("/ui/").headers["Location"].startswith("/ui/login")  # the other one ended
    fresh = api.app.test_client()
    page = fresh.get("/ui/login").get_data(as_text=True)
    assert fresh.post("/ui/login", data={"name": name, "password": PASSWORD, "csrf_token": token(page)}
                      ).status_code == 401
    assert fresh.post("/ui/login", data={"name": name, "password": new, "csrf_token": token(page)}).status_code == 302
    with api.service.sessions() as session:
        actors = session.execute(select(EvidenceEvent.actor).where(EvidenceEvent.kind == "user_password_set",
                                                                   EvidenceEvent.subject == f"user:{name}")).all()
    assert [a for a, in actors] == [f"user:{name}"]
