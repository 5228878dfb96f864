"""The analyst web UI: server-rendered pages on the same `Cases` service as the `/v1/cases` API.

People sign in with a name and password (`fraud-service users create NAME --role analyst`), and a TOTP
code when they have two-factor sign-in on (admins must: `api/ui_account.py`); the session is a signed,
HTTP-only, SameSite cookie, and every form that changes something carries the session's CSRF token (a
missing or wrong token is refused with 400 and nothing changes). All assets are served from `api/static`;
nothing is fetched from elsewhere.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from api import cases as case_api
from api.core import core, who
from api.errors import problems_text as _problems
from fraud_service.access.users import SEEN_EVERY, Person, list_users, session_person
from fraud_service.access.users import seen as mark_seen
from fraud_service.cases import queues as named_queues
from fraud_service.cases import service as cases
from fraud_service.cases.records import ACTIVE, LABELS, MOVES, SORTS, STATUSES, QueueFilter
from fraud_service.errors import CaseConflict, CaseNotFound, DatabaseDown, RegistryError, RequestInvalid
from fraud_service.scoring import explain
from fraud_service.scoring.policy import Decision
from models.registry import ModelRegistry

bp = Blueprint("ui", __name__, url_prefix="/ui")
F = TypeVar("F", bound=Callable[..., Any])
SESSION_HOURS = 12


def secret_key(home: Path) -> bytes:
    """The key that signs session cookies: made once per FRAUD_HOME (mode 0600), read by every worker."""
    path = home / "secret_key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".secret_key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # the first worker's key wins; the others read it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for requests that carry no session cookie
    (every machine call to the API): such a request starts with an empty session, as Flask would give it."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.cookies.get(self.get_cookie_name(app)) is None:
            return self.session_class()
        return super().open_session(app, request)


def install(app: Flask) -> None:
    """Session settings and the blueprint."""
    settings = app.config["SETTINGS"]
    app.session_interface = _CookieSessions()
    app.secret_key = app.config.get("SECRET_KEY") or secret_key(settings.home)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="fraud_session", SESSION_COOKIE_SECURE=settings.cookie_secure,
                      PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=SESSION_HOURS))
    app.jinja_env.filters["money"] = lambda v: "" if v is None else f"{float(v):,.2f}"
    app.jinja_env.filters["pct"] = lambda v: "" if v is None else f"{float(v):.0%}"
    app.jinja_env.filters["when"] = lambda v: "" if not v else str(v)[:16].replace("T", " ")
    from api import ui_account, ui_entities, ui_monitor, ui_queues, ui_rules, ui_webhooks  # noqa: F401 (views here)

    app.register_blueprint(bp)
    app.after_request(_page_headers)


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "person": g.get("person")}


@bp.before_request
def _check_csrf() -> None:
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "The form was stale or not sent from this site (CSRF check failed); reload the page and "
                       "try again. Nothing was changed.")


def current_person() -> Person | None:
    """The signed-in person of this request's session cookie, while it is still valid on the server (a session that
    never proved a second factor ends once the person has two-factor sign-in on)."""
    name, since = session.get("user"), session.get("since")
    if not isinstance(name, str) or not isinstance(since, str):
        return None
    return session_person(core().uow(), name, since, second_factor=session.get("two_factor") is True)


def signed_in(view: F) -> F:
    """Only signed-in, still active analysts and admins reach the view; others go to the sign-in page, and an admin
    without two-factor sign-in to the page that turns it on (nothing else is open to them until it is on)."""
    return _guarded(view, enrolling=False)


def enrolling(view: F) -> F:
    """`signed_in`, but open to an admin who has yet to turn two-factor sign-in on: the pages that do it."""
    return _guarded(view, enrolling=True)


def _guarded(view: F, enrolling: bool) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        person = current_person()
        if person is None:
            session.pop("user", None)
            return redirect(url_for("ui.login", next=request.full_path if request.method == "GET" else None))
        g.person = person
        if person.must_enrol:  # can open no case: not "signed in" for the assigner, however long they stay
            if not enrolling:
                return redirect(url_for("ui.two_factor"))  # a POST changes nothing either
        else:
            _mark_seen(person.name)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _mark_seen(name: str) -> None:
    """Record the person's UI activity, at most once a minute per session in this worker (a new sign-in at once):
    the assigner gives queues' cases only to people seen lately."""
    seen: dict[tuple[str, str], dt.datetime] = current_app.extensions.setdefault("seen", {})
    key, now = (name, str(session.get("since"))), core().clock()
    if key in seen and now - seen[key] < SEEN_EVERY:
        return
    try:
        mark_seen(core().uow(), name, now)
    except DatabaseDown:
        return  # the page itself says what is wrong; the next request records it
    if len(seen) > 10_000:
        seen.clear()
    seen[key] = now


def _person() -> Person:
    person: Person = g.person
    return person


WINDOWS = (7, 30, 90)
"""The windows, in days, the admins' monitor and dashboard pages offer."""
QUEUE_QUERY = ("queue", "status", "assignee", "decision", "reason", "min_amount", "sort", "limit")


def window_days() -> int:
    """The `days` query argument when it is one of WINDOWS (in digits, at most three: `int` refuses 4,300 of them),
    else 30."""
    text = request.args.get("days", "30")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 3 and int(text) in WINDOWS else 30


def admins_only(refusal: str) -> None:
    """A 403 page saying REFUSAL unless the signed-in person is an admin."""
    if _person().role != "admin":
        abort(403, refusal)


def _who() -> dict[str, Any]:
    return who(_person().actor)


PAGE_HEADERS = {
    # no inline script and nothing from elsewhere; inline style attributes are allowed (layout only)
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _page_headers(response: Response) -> Response:
    """Every answer forbids framing, sniffing and script from anywhere but this site's own files."""
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    return render_template("ui/error.html", code=exc.code, message=exc.description), exc.code or 500


def page_args() -> dict[str, list[str]]:
    """The query's queue fields, carried into the page links: only these (`endpoint` or `_external` are url_for's)."""
    return {k: v for k, v in request.args.to_dict(flat=False).items() if k in QUEUE_QUERY}


@bp.get("/")
@signed_in
def queue() -> ResponseReturnValue:
    if request.args.get("queue"):
        from api.ui_queues import named_queue

        return named_queue(request.args["queue"])
    try:
        f = case_api.queue_filter(request.args)
        page = cases.queue(core().uow(), f=f, now=core().clock())
    except RequestInvalid as exc:
        flash(_problems(exc), "error")
        f = QueueFilter()
        page = cases.queue(core().uow(), f=f, now=core().clock())
    reasons, assignees = cases.filter_choices(core().uow())
    return render_template("ui/queue.html", page=page, f=f, reasons=reasons, assignees=assignees,
                           statuses=STATUSES, active=ACTIVE, sorts=SORTS, labels=LABELS,
                           decisions=[d.value for d in Decision if d.needs_human], args=page_args(),
                           closed_list="closed" in f.statuses, named=_named(), selected=None)


def _named() -> list[Any]:
    """The named queues for the queue page's selector."""
    return named_queues.listing(core().uow(), now=core().clock())


@bp.post("/next")
@signed_in
def next_case() -> ResponseReturnValue:
    found = cases.next_case(core().uow(), actor=_person().actor, now=core().clock())
    if found is None:
        flash("No open case is waiting: the queue is clear.", "info")
        return redirect(url_for("ui.queue"))
    return redirect(url_for("ui.case", case_id=found.case_id))


def _feature_order(version: str) -> tuple[list[str], dict[str, Any]]:
    cache: dict[str, tuple[list[str], dict[str, Any]]] = current_app.extensions.setdefault("manifests", {})
    if version not in cache:
        try:
            manifest = ModelRegistry(current_app.config["SETTINGS"].models_dir).manifest(version)
            cache[version] = (list(manifest["features"]), dict(manifest.get("typical", {})))
        except (RegistryError, KeyError):
            cache[version] = ([], {})
    return cache[version]


def _charts(case: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each assessment's top SHAP contributions (both signs) with sentences, for the chart."""
    out = {}
    for a in case["assessment_list"]:
        features, typical = _feature_order(a["model_version"])
        if a.get("contributions") and features:
            out[a["assessment_id"]] = explain.chart(features, a["features"], a["contributions"], typical)
        else:
            out[a["assessment_id"]] = list(a["reasons"])  # the stored top reasons, when no order is known
    return out


@bp.get("/cases/<case_id>")
@signed_in
def case(case_id: str) -> ResponseReturnValue:
    try:
        found = case_api.context(case_id).to_dict()
    except CaseNotFound:
        abort(404, f"There is no case {case_id}.")
    except RequestInvalid as exc:
        abort(400, _problems(exc))
    people = [u.name for u in list_users(core().uow()) if u.disabled_at is None]
    return render_template("ui/case.html", case=found, charts=_charts(found), moves=MOVES.get(found["status"], ()),
                           labels=LABELS, people=people)


def _act(case_id: str, action: Callable[[], Any], done: str) -> Response:
    try:
        action()
        flash(done, "info")
    except CaseNotFound:
        abort(404, f"There is no case {case_id}.")
    except CaseConflict as exc:
        flash(str(exc), "error")
    except RequestInvalid as exc:
        flash(_problems(exc), "error")
    return redirect(url_for("ui.case", case_id=case_id))


@bp.post("/cases/<case_id>/claim")
@signed_in
def claim(case_id: str) -> ResponseReturnValue:
    return _act(case_id, lambda: cases.claim(core().uow(), case_id=case_id, **_who()), "The case is yours.")


@bp.post("/cases/<case_id>/assign")
@signed_in
def assign(case_id: str) -> ResponseReturnValue:
    name = request.form.get("assignee") or None
    return _act(case_id, lambda: cases.assign(core().uow(), case_id=case_id, assignee=name, **_who()),
                f"Assigned to {name}." if name else "Unassigned.")


@bp.post("/cases/<case_id>/status")
@signed_in
def set_status(case_id: str) -> ResponseReturnValue:
    status = request.form.get("status", "")
    return _act(case_id, lambda: cases.set_status(core().uow(), case_id=case_id, status=status,
                                                  comment=request.form.get("comment", ""), **_who()),
                f"Status set to {status.replace('_', ' ')}.")


@bp.post("/cases/<case_id>/notes")
@signed_in
def add_note(case_id: str) -> ResponseReturnValue:
    return _act(case_id, lambda: cases.add_note(core().uow(), case_id=case_id, body=request.form.get("body", ""),
                                                **_who()),
                "Note added.")


@bp.post("/cases/<case_id>/close")
@signed_in
def close(case_id: str) -> ResponseReturnValue:
    one_for_all = request.form.get("label") or None  # a case too large to label return by return on one page
    dispositions = None if one_for_all else {key.removeprefix("label:"): value for key, value in request.form.items()
                                             if key.startswith("label:") and value}
    return _act(case_id, lambda: cases.close(core().uow(), case_id=case_id, dispositions=dispositions,
                                             label=one_for_all, reason=request.form.get("reason", ""),
                                             feedback=core().feedback,
                                             unchanged_since=request.form.get("unchanged_since") or None, **_who()),
                "Case closed; the labels are recorded for the next training run.")


@bp.post("/cases/<case_id>/reopen")
@signed_in
def reopen(case_id: str) -> ResponseReturnValue:
    return _act(case_id, lambda: cases.reopen(core().uow(), case_id=case_id, reason=request.form.get("reason", ""),
                                              **_who()),
                "Case reopened.")


@bp.post("/bulk-close")
@signed_in
def bulk_close() -> ResponseReturnValue:
    ids = request.form.getlist("case_id")
    shown = dict(seen.partition(" ")[::2] for seen in request.form.getlist("seen"))  # "CASE_ID UPDATED_AT" per row
    try:
        closed = cases.bulk_close(core().uow(), case_ids=ids, label=request.form.get("label", ""),
                                  reason=request.form.get("reason", ""), feedback=core().feedback,
                                  unchanged={c: shown.get(c, "") for c in ids}, **_who())
        flash(f"Closed {len(closed)} case(s) as {request.form.get('label')}.", "info")
    except (CaseConflict, CaseNotFound) as exc:
        flash(f"Nothing was closed: {exc}", "error")
    except RequestInvalid as exc:
        flash(f"Nothing was closed: {_problems(exc)}", "error")
    return redirect(url_for("ui.queue"))


@bp.post("/cases/<case_id>/bundle")
@signed_in
def bundle(case_id: str) -> ResponseReturnValue:
    """The evidence bundle download; a POST with the session's CSRF token, since the export is an evidence event
    (a GET would let another site's page record exports in an analyst's name)."""
    try:
        return case_api.export(case_id, _person().actor)
    except CaseNotFound:
        abort(404, f"There is no case {case_id}.")
