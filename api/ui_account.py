"""The analyst UI's account pages: sign-in, its second step, sign-out and two-factor sign-in (part of the `ui`
blueprint, api/ui.py; the core is `fraud_service.access.users` and `.totp`).

Signing in takes the password, then, for a person with two-factor sign-in on, a code from their authenticator app
or a recovery code. Between the two steps the session holds only who is half-way in and since when: it is not
signed in, and the half-way state lapses after PENDING (the code page then asks for the password again). Wrong
codes count towards the same throttling as wrong passwords. An admin without two-factor sign-in is signed in but
sent to the page that turns it on, and nothing else opens until it is on (`ui.signed_in`). Analysts may turn it
on there too. Every form carries the session's CSRF token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from api.core import core
from api.ui import _person, bp, current_person, enrolling, signed_in
from fraud_service.access import totp
from fraud_service.access.users import Person, change_password, sign_in, sign_out
from fraud_service.errors import SignInThrottled, TotpError, TotpUnreadable, UserError

PENDING = dt.timedelta(minutes=5)
"""How long a person who gave the right password has to give the code."""
_SAFE_NEXT = re.compile(r"/ui/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
"""Where sign-in may send a person back to: a page of this UI, in plain URL characters (no CR/LF, no `//host`)."""
_HALF_WAY = ("pending", "pending_at", "next")
_NO_STORE = {"Cache-Control": "no-store"}  # pages showing a secret or recovery codes stay out of caches


def _app_key() -> bytes:
    """What the TOTP secrets' key is derived from: the app's secret, the key that signs the session cookies."""
    key = current_app.secret_key
    return key if isinstance(key, bytes) else str(key).encode()


def _address() -> str:
    """Where a sign-in attempt came from, as throttling counts it: the connection's address, or behind
    FRAUD_TRUSTED_PROXIES proxies the address the outermost of them saw (X-Forwarded-For, that many from its end;
    what a client wrote before it is not trusted)."""
    hops = current_app.config["SETTINGS"].trusted_proxies
    if hops:
        seen = [a.strip() for a in ",".join(request.headers.getlist("X-Forwarded-For")).split(",") if a.strip()]
        if len(seen) >= hops:
            return seen[-hops][:100]
    return request.remote_addr or "unknown"


def _throttled(exc: SignInThrottled, template: str, **context: str) -> ResponseReturnValue:
    flash(f"{exc}. Nothing was checked.", "error")
    return render_template(template, **context), 429, {"Retry-After": str(exc.retry_after)}


@bp.get("/login")
def login() -> ResponseReturnValue:
    return render_template("ui/login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login_post() -> ResponseReturnValue:
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    target = request.form.get("next") or ""
    try:
        person = sign_in(core().uow(), name, password, address=_address())
    except SignInThrottled as exc:
        return _throttled(exc, "ui/login.html", next=target, name=name)
    if person is None:
        flash("Unknown user or wrong password.", "error")
        return render_template("ui/login.html", next=target, name=name), 401
    if person.totp:  # half-way in: the code page finishes signing in
        session.clear()
        session.update(pending=person.name, pending_at=core().clock().isoformat(), next=target,
                       csrf=secrets.token_urlsafe(32))
        return redirect(url_for("ui.login_code"))
    return _signed_in(person, target)


def _signed_in(person: Person, target: str) -> Response:
    """Mark the session signed in as PERSON (a new session: nothing of the one before is kept) and send them on."""
    session.clear()
    session.permanent = True
    session["user"] = person.name
    session["since"] = dt.datetime.now(dt.UTC).isoformat()
    session["csrf"] = secrets.token_urlsafe(32)
    session["two_factor"] = person.totp  # only the code page signs in a person who has it on
    if person.must_enrol:
        flash("Admins sign in with a second factor: turn two-factor sign-in on to go on.", "info")
        return redirect(url_for("ui.two_factor"))
    return redirect(target if _SAFE_NEXT.fullmatch(target) else url_for("ui.queue"))


def _signed_in_again_after(ended: dt.datetime) -> None:
    """This session counts as signed in just after ENDED, the moment the person's sessions were ended (a change of
    password, two-factor sign-in turned on): the others stay ended, this one goes on."""
    session["since"] = (ended + dt.timedelta(microseconds=1)).isoformat()


def _pending() -> str | None:
    """The name of the person half-way through signing in, while that lasts (PENDING)."""
    name, at = session.get("pending"), session.get("pending_at")
    if not isinstance(name, str) or not isinstance(at, str):
        return None
    try:
        started = dt.datetime.fromisoformat(at)
    except ValueError:
        return None
    return name if dt.timedelta(0) <= core().clock() - started <= PENDING else None


def _start_again() -> Response:
    if "pending" in session:
        flash(f"The sign-in was not finished within {PENDING.seconds // 60} minutes: sign in again.", "error")
    for key in _HALF_WAY:
        session.pop(key, None)
    return redirect(url_for("ui.login"))


@bp.get("/login/code")
def login_code() -> ResponseReturnValue:
    name = _pending()
    if name is None:
        return _start_again()
    return render_template("ui/login_code.html", name=name)


@bp.post("/login/code")
def login_code_post() -> ResponseReturnValue:
    name = _pending()
    if name is None:
        return _start_again()
    try:
        person = totp.sign_in_code(core().uow(), name, request.form.get("code", ""), _app_key(), address=_address(),
                                   now=core().clock())
    except SignInThrottled as exc:
        return _throttled(exc, "ui/login_code.html", name=name)
    except TotpUnreadable as exc:
        flash(str(exc), "error")
        return render_template("ui/login_code.html", name=name), 401
    if person is None:
        flash("Wrong code, or one used already: enter the app's current code, or an unused recovery code.", "error")
        return render_template("ui/login_code.html", name=name), 401
    return _signed_in(person, str(session.get("next") or ""))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    person = current_person()
    if person is not None:
        sign_out(core().uow(), person.name)  # the cookie, wherever a copy of it is, stops working
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"))


@bp.get("/two-factor")
@enrolling
def two_factor() -> ResponseReturnValue:
    """Two-factor sign-in: turn it on (two steps), see the recovery codes left, or turn it off."""
    state = totp.status(core().uow(), _person().name, _app_key())
    return render_template("ui/two_factor.html", state=state, codes=None), 200, _NO_STORE


@bp.post("/two-factor/begin")
@enrolling
def two_factor_begin() -> ResponseReturnValue:
    try:
        totp.begin(core().uow(), _person().name, _app_key())
    except TotpError as exc:
        flash(str(exc), "error")
    return redirect(url_for("ui.two_factor"))


@bp.post("/two-factor/confirm")
@enrolling
def two_factor_confirm() -> ResponseReturnValue:
    """Turn it on with a code from the app; the recovery codes are on this answer only (never stored in clear)."""
    now = core().clock()
    try:
        codes = totp.confirm(core().uow(), _person().name, request.form.get("code", ""), _app_key(), now=now)
    except TotpError as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.two_factor"))
    session["two_factor"] = True  # this session proved the code; the person's other sessions, which did not, end
    _signed_in_again_after(now)  # the other sessions end; this one goes on
    g.person = dataclasses.replace(_person(), totp=True)
    flash("Two-factor sign-in is on: from now on, signing in asks for a code after the password.", "info")
    state = totp.status(core().uow(), _person().name, _app_key())
    return render_template("ui/two_factor.html", state=state, codes=codes), 200, _NO_STORE


@bp.post("/two-factor/disable")
@signed_in
def two_factor_disable() -> ResponseReturnValue:
    try:
        totp.disable(core().uow(), _person().name, request.form.get("code", ""), _app_key(), address=_address(),
                     now=core().clock())
        flash("Two-factor sign-in is off; its recovery codes no longer work.", "info")
    except SignInThrottled as exc:
        flash(f"{exc}. Nothing was checked.", "error")
    except TotpError as exc:
        flash(str(exc), "error")
    return redirect(url_for("ui.two_factor"))


@bp.get("/password")
@signed_in
def password_page() -> ResponseReturnValue:
    """Change one's own password."""
    return render_template("ui/password.html")


@bp.post("/password")
@signed_in
def password_change() -> ResponseReturnValue:
    """Change one's own password (the current one first); every other session of theirs ends, this one goes on."""
    current, new = request.form.get("current", ""), request.form.get("new", "")
    if new != request.form.get("again", ""):
        flash("The new password and its repetition differ; nothing was changed.", "error")
        return render_template("ui/password.html"), 400
    try:
        ended = change_password(core().uow(), _person().name, current, new, address=_address(), now=core().clock())
    except SignInThrottled as exc:
        return _throttled(exc, "ui/password.html")
    except UserError as exc:
        flash(f"{str(exc)[0].upper()}{str(exc)[1:]}.", "error")
        return render_template("ui/password.html"), 400
    _signed_in_again_after(ended)
    flash("Your password is changed; your other sessions have ended.", "info")
    return redirect(url_for("ui.password_page"))
