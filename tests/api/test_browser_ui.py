"""The analyst UI in a real browser: headless Debian Chromium driven by Playwright against the app served over HTTP.

Sign in, open the queue, open the riskiest case, see its SHAP chart and linked accounts, add a note, close it as
fraud; then the labels are in the labels table, the returns system's webhook receiver has heard each return's final
outcome, and the evidence chain verifies. Screenshots of the queue and the
case page are saved (under the test's directory, or FRAUD_SCREENSHOTS when set) and checked to be real pictures.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from fraud_service.access.users import create_user
from fraud_service.config import Settings
from fraud_service.feedback import webhooks
from fraud_service.feedback.dispatch import Dispatcher
from fraud_service.store import chain
from fraud_service.store.schema import Assessment, Case, Label
from tests.api.conftest import Api, make_api, private_home
from tests.api.test_assess import band_policy, expected
from tests.conftest import CHROMIUM, TrainedWorld
from tests.feedback.test_delivery import Receiver, until, verify

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PASSWORD = "analyst password 1"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _shared_address_returns(dataset: Path, n: int) -> list[str]:
    """Returns on orders whose shipping address other customers used too (so the case has linked accounts)."""
    orders = pd.read_parquet(dataset / "orders.parquet")
    returns = pd.read_parquet(dataset / "returns.parquet")
    shared = orders.groupby("address_token")["customer_id"].nunique()
    tokens = set(shared[shared >= 3].index)
    picked = returns.merge(orders[["order_id", "address_token"]], on="order_id")
    picked = picked[picked["address_token"].isin(tokens)].drop_duplicates("address_token")
    return list(picked.sort_values("return_id")["return_id"].head(n))


@pytest.fixture(scope="module")
def served(serving_home: Path, trained_world: TrainedWorld,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Api]]:
    root = tmp_path_factory.mktemp("browser")
    home = private_home(serving_home, root / "home")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{root / 'fraud.db'}"})
    api = make_api(settings, trained_world.dataset, "sqlite")
    create_user(api.service.uow(), "alice", "analyst", PASSWORD, "test")
    for return_id in _shared_address_returns(trained_world.dataset, 3):
        body = api.body(return_id)
        api.service.assessor.policy = band_policy(expected(api, body)[2], "review")
        assert api.assess(body).status_code == 201
    server = make_server("127.0.0.1", 0, api.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", api
    finally:
        server.shutdown()
        api.service.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_an_analyst_works_the_riskiest_case_to_a_fraud_label(served: tuple[str, Api], browser: Any,
                                                             tmp_path: Path) -> None:
    base, api = served
    shots = Path(os.environ.get("FRAUD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/ui/")
    assert "/ui/login" in page.url  # the queue needs a signed-in person
    page.fill("#name", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")

    rows = page.locator("#queue tbody tr[data-href]")
    assert rows.count() == 3
    ranked = api.client.get("/v1/cases", headers=api.headers("analyst")).get_json()["cases"]
    riskiest = ranked[0]["case_id"]
    assert rows.first.locator("a").first.inner_text() == riskiest  # the page ranks as the API does
    page.screenshot(path=str(shots / "queue.png"), full_page=True)

    rows.first.locator("a").first.click()
    page.wait_for_url(f"{base}/ui/cases/{riskiest}")
    bars = page.locator("table.shap svg rect")
    assert bars.count() >= 3  # the SHAP chart of the opened return
    assert page.locator("table.shap td").first.inner_text().strip()  # with a sentence a person reads
    linked = page.locator("#linked tbody tr")
    assert linked.count() >= 2  # customers who used the same address
    assert "address" in page.locator("#linked").inner_text()
    page.screenshot(path=str(shots / "case.png"), full_page=False)

    page.fill("#note-body", "Address shared with two other accounts; parcel weighed 40 g.")
    page.click("form[action$='/notes'] button[type=submit]")
    page.wait_for_load_state()
    assert "Note added." in page.inner_text("main")
    assert "parcel weighed 40 g" in page.inner_text("main")

    receiver = Receiver()  # the returns system, told of each return's final outcome
    hook, secret = webhooks.add(api.service.uow(), url=receiver.url, events=["assessment.outcome"], actor="test",
                                allow_private=True)
    sender = Dispatcher(api.service.uow, allow_private=True, timeout_s=2)
    sender.start()
    try:
        page.select_option("#label-all", "fraud")  # sets every return's label (ui.js)
        page.fill("#close-reason", "Empty box: the depot weighed the parcel.")
        page.click("#close-form button[type=submit]")
        page.wait_for_load_state()
        assert "Case closed" in page.inner_text("main")
        assert page.locator("form[action$='/reopen']").count() == 1
        members = {a["assessment_id"] for a in api.client.get(
            f"/v1/cases/{riskiest}", headers=api.headers("analyst")).get_json()["assessment_list"]}
        heard = until(lambda: (got := [verify(secret, h, b)["data"] for h, b in receiver.got])
                      and {d["assessment_id"] for d in got} >= members and got, 5)
        assert {d["assessment_id"] for d in heard} == members
        assert all((d["outcome"]["status"], d["outcome"]["decision"], d["outcome"]["label"],
                    d["outcome"]["decided_by"]) == ("final", "deny", "fraud", "user:alice") for d in heard)
    finally:
        sender.close()
        receiver.close()
        webhooks.remove(api.service.uow(), webhook_id=hook.id, actor="test")

    with api.service.sessions() as session:
        case = session.get(Case, riskiest)
        assert case is not None and case.status == "closed"
        returns = set(session.execute(select(Assessment.return_id).where(Assessment.case_id == riskiest)).scalars())
        labels = session.execute(select(Label.return_id, Label.label, Label.source, Label.actor)
                                 .where(Label.case_id == riskiest)).tuples().all()
        assert sorted(labels) == sorted((r, "fraud", "analyst", "user:alice") for r in returns)
        assert chain.verify(session).ok
    for name in ("queue.png", "case.png"):
        width, height = _png_size(shots / name)
        assert width == 1400 and height >= 1000
    page.close()


def test_the_next_case_shortcut_claims_one(served: tuple[str, Api], browser: Any) -> None:
    base, api = served
    page = browser.new_page()
    page.goto(f"{base}/ui/login")
    page.fill("#name", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")
    page.keyboard.press("n")
    page.wait_for_url(f"{base}/ui/cases/*")
    case_id = page.url.rsplit("/", 1)[1]
    with api.service.sessions() as session:
        case = session.get(Case, case_id)
        assert case is not None and (case.status, case.assignee) == ("in_review", "user:alice")
    page.close()


def _sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#name", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")


def test_search_leads_from_an_id_to_its_customer_and_tokens(served: tuple[str, Api], browser: Any,
                                                            tmp_path: Path) -> None:
    base, api = served
    shots = Path(os.environ.get("FRAUD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    orders = pd.read_parquet(api.dataset / "orders.parquet")
    shared = orders.groupby("address_token")["customer_id"].nunique()
    address = str(shared[shared >= 3].sort_values(kind="stable").index[0])
    customer = str(sorted(orders[orders["address_token"] == address]["customer_id"].unique())[0])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, base)
    page.keyboard.press("/")  # focuses the search box on any page
    assert page.evaluate("document.activeElement.id") == "search-box"
    page.keyboard.type(customer)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/customers/{customer}")  # an exact id opens its page at once
    assert customer in page.locator("h1").inner_text()
    page.screenshot(path=str(shots / "customer.png"), full_page=True)
    page.locator(f"#tokens a[href='/ui/tokens/address/{address}']").click()
    page.wait_for_url(f"{base}/ui/tokens/address/{address}")
    holders = page.locator("#holders tbody tr")
    assert holders.count() == shared[address]
    page.screenshot(path=str(shots / "token.png"), full_page=True)
    page.locator(f"#holders a[href='/ui/customers/{customer}']").click()
    page.wait_for_url(f"{base}/ui/customers/{customer}")
    page.close()


ADMIN = "dora"
ADMIN_PAGES = ["/ui/queues", "/ui/dashboard", "/ui/dashboard?days=90", "/ui/rules", "/ui/monitor", "/ui/webhooks",
               "/ui/two-factor"]


def _named_queue(api: Api) -> str:
    """A named queue holding every case not closed (made once), with alice as its member; its queue page."""
    from fraud_service.cases import queues

    if not any(q.name == "everything" for q in queues.listing(api.service.uow())):
        queues.put(api.service.uow(), name="everything", body={"filter": {}, "sla_hours": 0.01, "cap": 5,
                                                                   "members": ["alice"]}, actor="test")
    return "/ui/?queue=everything"


def _sign_in_admin(page: Any, base: str, api: Api) -> None:
    """Sign the page in as an admin with two-factor sign-in on (made once, its key turned on a minute ago)."""
    import datetime as dt

    import pyotp

    from fraud_service.access import totp
    from fraud_service.store.schema import User

    key = api.app.secret_key
    assert isinstance(key, bytes)
    held = api.app.extensions.setdefault("test_admin_secret", {})
    if ADMIN not in held:
        create_user(api.service.uow(), ADMIN, "admin", PASSWORD, "test")
        secret = totp.begin(api.service.uow(), ADMIN, key).secret
        before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        held[ADMIN] = (secret, totp.confirm(api.service.uow(), ADMIN, pyotp.TOTP(secret).at(before), key, now=before))
    secret, recovery = held[ADMIN]
    page.context.clear_cookies()
    page.goto(f"{base}/ui/login")
    page.fill("#name", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/login/code")
    with api.service.sessions() as session:
        user = session.get(User, ADMIN)
        last = -1 if user is None or user.totp_last_step is None else user.totp_last_step
    step = int(dt.datetime.now(dt.UTC).timestamp()) // 30
    unused = [s for s in (step, step + 1) if s > last]  # a code never passes twice; else a recovery code
    page.fill("#code", pyotp.TOTP(secret).at(unused[0] * 30) if unused else recovery.pop())
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")


def test_every_page_fits_a_phone(served: tuple[str, Api], browser: Any) -> None:
    """At 390 px wide no page scrolls sideways: the header wraps, panels stack, wide tables scroll in their card."""
    base, api = served
    cases = api.client.get("/v1/cases?status=all", headers=api.headers("analyst")).get_json()["cases"]
    customer = cases[0]["customer_id"]
    token = next(link for link in api.client.get(f"/v1/cases/{cases[0]['case_id']}", headers=api.headers(
        "analyst")).get_json()["links"] if link["entity"] == "address")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{base}/ui/login")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _sign_in(page, base)
    paths = ["/", "/ui/", "/ui/no-such-page", "/ui/?status=closed&sort=age", f"/ui/cases/{cases[0]['case_id']}",
             "/ui/search",
             f"/ui/search?q={customer[:3]}", f"/ui/customers/{customer}",
             f"/ui/tokens/address/{token['value']}", "/ui/rules", "/ui/lists",
             _named_queue(api)]
    for path in paths:
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    _sign_in_admin(page, base, api)
    for path in ADMIN_PAGES:
        page.goto(base + path)
        assert page.url == base + path  # an admin's page, not the sign-in or two-factor page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    page.close()


def test_the_link_graph_expands_a_node_and_opens_its_page(served: tuple[str, Api], browser: Any,
                                                          tmp_path: Path) -> None:
    base, api = served
    case_id = api.client.get("/v1/cases?status=all", headers=api.headers("analyst")).get_json()["cases"][0]["case_id"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, base)
    page.goto(f"{base}/ui/cases/{case_id}")
    page.wait_for_selector("#graph[data-ready=true]")
    page.locator("#graph").scroll_into_view_if_needed()
    expected = api.client.get(f"/v1/cases/{case_id}/graph", headers=api.headers("analyst")).get_json()
    assert page.evaluate("window.fraudGraph.nodes().length") == len(expected["nodes"])
    # a node at the edge of the graph, not yet expanded: clicking it fetches and adds its neighbours
    target = page.evaluate("""() => { const n = window.fraudGraph.nodes('[!expanded][!hub][kind = "customer"]')
        .filter(n => n.degree() < 3)[0] || window.fraudGraph.nodes('[!expanded][!hub]')[0];
        const p = n.renderedPosition(); return {id: n.id(), x: p.x, y: p.y, kind: n.data('kind'),
        value: n.data('value')}; }""")
    more = api.client.get(f"/v1/graph/{target['kind']}/{target['value']}?hops=1",
                          headers=api.headers("analyst")).get_json()
    new = {n["key"] for n in more["nodes"]} - {n["key"] for n in expected["nodes"]}
    box = page.locator("#graph").bounding_box()
    page.mouse.click(box["x"] + target["x"], box["y"] + target["y"])
    page.wait_for_selector("#graph[data-expanded]")
    assert page.evaluate("window.fraudGraph.nodes().length") == len(expected["nodes"]) + len(new)
    assert target["value"] in page.inner_text("#graph-info")
    page.screenshot(path=str(Path(os.environ.get("FRAUD_SCREENSHOTS") or tmp_path) / "graph.png"), full_page=False)
    page.click("#graph-open")
    kind = target["kind"]
    page.wait_for_url(f"{base}/ui/customers/*" if kind == "customer" else f"{base}/ui/tokens/{kind}/*")
    assert target["value"] in page.locator("h1").inner_text()
    page.close()


AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe-core-4.14.1" / "axe.min.js"


def test_no_page_has_a_serious_accessibility_violation(served: tuple[str, Api], browser: Any) -> None:
    """axe-core (vendored from the npm registry) on every analyst page: no serious or critical violation."""
    base, api = served
    cases = api.client.get("/v1/cases?status=all", headers=api.headers("analyst")).get_json()["cases"]
    detail = api.client.get(f"/v1/cases/{cases[0]['case_id']}", headers=api.headers("analyst")).get_json()
    token = next(link for link in detail["links"] if link["entity"] != "customer")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    paths = ["/ui/login"]
    page.goto(base + paths[0])
    found = {}
    source = AXE.read_text()

    def check(path: str) -> None:
        page.evaluate(source)  # evaluated through the debugging protocol: the pages' CSP forbids injected scripts
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [(n["target"], n.get("failureSummary", "")[-90:]) for n in v["nodes"]][:6])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[path] = bad

    check(paths[0])
    _sign_in(page, base)
    for path in ["/", "/ui/", "/ui/no-such-page", "/ui/?status=closed&sort=age", f"/ui/cases/{cases[0]['case_id']}",
                 "/ui/search",
                 f"/ui/search?q={cases[0]['customer_id'][:3]}", f"/ui/customers/{cases[0]['customer_id']}",
                 f"/ui/tokens/{token['entity']}/{token['value']}", "/ui/rules", "/ui/lists",
             _named_queue(api)]:
        page.goto(base + path)
        if page.locator("#graph").count():
            page.wait_for_selector("#graph[data-ready=true]")
        check(path)
    _sign_in_admin(page, base, api)
    for path in ADMIN_PAGES:
        page.goto(base + path)
        assert page.url == base + path
        check(path)
    assert not found, "\n".join(f"{path}: {bad}" for path, bad in found.items())


def test_an_admin_turns_two_factor_on_at_the_first_sign_in_then_signs_in_with_a_code(
        served: tuple[str, Api], browser: Any, tmp_path: Path) -> None:
    import datetime as dt

    import pyotp

    base, api = served
    shots = Path(os.environ.get("FRAUD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    create_user(api.service.uow(), "carol", "admin", PASSWORD, "test")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{base}/ui/login")
    page.fill("#name", "carol")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/two-factor")  # an admin goes nowhere else first
    page.goto(f"{base}/ui/monitor")
    page.wait_for_url(f"{base}/ui/two-factor")
    page.click("form[action$='/two-factor/begin'] button")
    page.wait_for_load_state()
    secret = page.inner_text(".secret").replace(" ", "").strip()  # typed by hand into the app
    assert f"secret={secret}" in page.get_attribute("a[href^='otpauth://']", "href")
    page.screenshot(path=str(shots / "two-factor.png"), full_page=True)
    page.fill("#confirm-code", pyotp.TOTP(secret).now())
    page.click("form[action$='/two-factor/confirm'] button")
    page.wait_for_load_state()
    assert page.locator("ul.codes li").count() == 10
    page.screenshot(path=str(shots / "recovery-codes.png"), full_page=True)
    page.click("text=I have saved them")
    page.wait_for_url(f"{base}/ui/")
    page.click("header form[action$='/logout'] button")
    page.wait_for_url(f"{base}/ui/login")

    page.fill("#name", "carol")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/login/code")
    page.screenshot(path=str(shots / "code.png"), full_page=True)
    page.fill("#code", pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")
    page.goto(f"{base}/ui/monitor")
    assert page.url == f"{base}/ui/monitor"
    for name in ("two-factor.png", "recovery-codes.png", "code.png"):
        assert _png_size(shots / name)[0] == 1200
    page.close()


def test_ids_and_words_of_any_length_wrap_inside_their_card(served: tuple[str, Api], browser: Any,
                                                             tmp_path: Path) -> None:
    """A 64-character return id (ids may have 200) pushed the case page's returns table past its card, its columns
    under the Decide panel, at 1280 px; long ids and a note's long URL made pages scroll sideways at 390 px; a category
    holding a right-to-left override showed the price after it backwards (a red-team run). Runs last: it adds a case."""
    base, api = served
    source = _shared_address_returns(api.dataset, 4)[-1]
    for mark in "RS":  # two returns of one customer: one case, and its returns table
        body = api.body(source, return_id=mark + "x" * 199)
        body["order"]["items"][0]["category"] = "home \u202e"
        api.service.assessor.policy = band_policy(expected(api, body)[2], "review")
        assert api.assess(body).status_code == 201
    case_id = _case_of(api, body["return_id"])
    assert _case_of(api, "R" + "x" * 199) == case_id
    note = "see https://example.com/" + "a" * 850
    assert api.client.post(f"/v1/cases/{case_id}/notes", json={"body": note},
                           headers=api.headers("analyst")).status_code == 201
    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        _sign_in(page, base)
        page.goto(f"{base}/ui/cases/{case_id}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        table, card = page.evaluate("[document.querySelector('#returns').getBoundingClientRect().right, "
                                    "document.querySelector('#returns').closest('.card').getBoundingClientRect().right]")
        assert table <= card + 0.5, (width, table, card)  # the table stays inside its card
        page.screenshot(path=str(Path(os.environ.get("FRAUD_SCREENSHOTS") or tmp_path) / f"long-ids-{width}.png"),
                        full_page=True)
        assert page.locator("bdi", has_text="home").count() == 2  # each return's: the override ends with its category
        page.goto(f"{base}/ui/?limit=500")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        page.close()


def _case_of(api: Api, return_id: str) -> str:
    with api.service.sessions() as session:
        case_id = session.execute(select(Assessment.case_id).where(Assessment.return_id == return_id)).scalar_one()
    assert case_id is not None
    return str(case_id)


def test_the_link_graph_draws_every_edge_whatever_the_ids_hold(served: tuple[str, Api], browser: Any) -> None:
    """Ids may hold "|" and ":": an edge's id was the customer's key, "|", the token's key, so customer `GAx` on address
    `Bx|address:Cx` and customer `GAx|address:Bx` on address `Cx` gave two edges one id, and the graph drew one (a
    red-team run). Runs after the tests that count the queue: it adds cases."""
    base, api = served
    source = _shared_address_returns(api.dataset, 5)[-1]
    device = "dev-shared-by-both"
    for n, (customer, address) in enumerate((("GAx", "Bx|address:Cx"), ("GAx|address:Bx", "Cx"))):
        body = api.body(source, return_id=f"graph-ids-{n}", customer_id=customer)
        body["order"] = {**body["order"], "order_id": f"graph-ids-order-{n}", "customer_id": customer,
                         "address_token": address, "device_token": device}
        api.service.assessor.policy = band_policy(expected(api, body)[2], "review")
        assert api.assess(body).status_code == 201, api.assess(body).get_json()
    case_id = _case_of(api, "graph-ids-0")
    drawn = api.client.get(f"/v1/cases/{case_id}/graph", headers=api.headers("analyst")).get_json()
    pairs = {(e["customer"], e["token"]) for e in drawn["edges"]}
    assert {("customer:GAx", "address:Bx|address:Cx"), ("customer:GAx|address:Bx", "address:Cx")} <= pairs, pairs
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, base)
    page.goto(f"{base}/ui/cases/{case_id}")
    page.wait_for_selector("#graph[data-ready=true]")
    assert page.evaluate("window.fraudGraph.edges().length") == len(drawn["edges"])
    assert page.evaluate("window.fraudGraph.nodes().length") == len(drawn["nodes"])
    page.close()
