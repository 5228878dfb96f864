"""The edges a real client meets: keys and roles, validation, limits, lists, readiness, metrics, logs, and a
database that goes away (503, never a decision without a record)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text

from fraud_service.access.keys import revoke_key
from fraud_service.config import Settings
from fraud_service.scoring.policy import Decision
from fraud_service.store import chain
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import EvidenceEvent
from tests.api.conftest import Api, body_from_dataset, make_api, private_home
from tests.conftest import TrainedWorld
from tests.store.conftest import POSTGRES

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def body(api: Api) -> dict[str, Any]:
    returns = pd.read_parquet(api.dataset / "returns.parquet")
    return api.body(str(returns["return_id"].iloc[3]), return_id=f"e-{uuid.uuid4().hex[:12]}")


# --- keys and roles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer fsk_nope_nope", "Bearer not-a-key"])
def test_missing_or_unknown_key_is_401(api: Api, body: dict[str, Any], header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = api.client.post("/v1/returns/assess", json=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_401(api: Api, body: dict[str, Any]) -> None:
    from fraud_service.access.keys import create_key

    key = create_key(api.service.uow(), "scoring", "to revoke", "test")
    revoke_key(api.service.uow(), key.split("_")[1], "test")
    response = api.client.post("/v1/returns/assess", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert "revoked" in response.get_json()["message"]


def test_a_forged_secret_for_a_real_key_id_is_401(api: Api, body: dict[str, Any]) -> None:
    key_id = api.keys["admin"].split("_")[1]
    forged = f"fsk_{key_id}_{'x' * 32}"
    response = api.client.post("/v1/returns/assess", json=body, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


@pytest.mark.parametrize(("role", "method", "path", "allowed"), [
    ("analyst", "post", "/v1/returns/assess", False),
    ("admin", "post", "/v1/returns/assess", True),
    ("scoring", "get", "/v1/lists", False),
    ("analyst", "get", "/v1/lists", True),
    ("scoring", "post", "/v1/lists", False),
    ("analyst", "post", "/v1/lists", False),
    ("analyst", "delete", "/v1/lists/customer/x", False),
])
def test_roles(api: Api, body: dict[str, Any], role: str, method: str, path: str, allowed: bool) -> None:
    kwargs: dict[str, Any] = {"headers": api.headers(role)}
    if method == "post":
        kwargs["json"] = body if "assess" in path else {"entity": "customer", "value": f"v{uuid.uuid4().hex}",
                                                        "list": "block", "reason": "role test"}
    response = getattr(api.client, method)(path, **kwargs)
    if allowed:
        assert response.status_code in (200, 201), response.get_json()
    else:
        assert response.status_code == 403
        assert response.get_json()["error"] == "forbidden" and role in response.get_json()["message"]


# --- validation and limits -------------------------------------------------------------------------------
def test_not_json_is_400(api: Api) -> None:
    response = api.client.post("/v1/returns/assess", data="{not json", headers=api.headers(),
                               content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"] == "bad_request"


def test_every_bad_field_is_listed_with_422(api: Api, body: dict[str, Any]) -> None:
    body.update(return_type="stolen", refund_amount=-3, items_count="two")
    del body["customer_id"]
    body["order"]["items"][0]["quantity"] = 0
    body["order"]["placed_at"] = "yesterday"
    response = api.assess(body)
    assert response.status_code == 422
    got = response.get_json()
    fields = {p["field"] for p in got["problems"]}
    assert fields == {"return_type", "refund_amount", "items_count", "customer_id", "order.items[0].quantity",
                      "order.placed_at"}
    for problem in got["problems"]:
        assert problem["problem"] and problem["expected"]


def test_json_only_pythons_reader_accepts_still_names_the_field(api: Api, body: dict[str, Any]) -> None:
    """A NaN literal is not JSON orjson reads; the body is read as `json` reads it and validation names the
    field, as for any other bad value (not a 400 for the whole body)."""
    text = json.dumps({**body, "refund_amount": float("nan")})
    assert "NaN" in text
    response = api.client.post("/v1/returns/assess", data=text, headers=api.headers(),
                               content_type="application/json")
    assert response.status_code == 422
    assert {p["field"] for p in response.get_json()["problems"]} == {"refund_amount"}


def test_absurdly_large_numbers_are_named(api: Api, body: dict[str, Any]) -> None:
    body.update(items_count=10**30, refund_amount=1e12)
    body["order"]["items"][0]["quantity"] = 1_000_001
    response = api.assess(body)
    assert response.status_code == 422
    problems = {p["field"]: p for p in response.get_json()["problems"]}
    assert set(problems) == {"items_count", "refund_amount", "order.items[0].quantity"}
    assert problems["order.items[0].quantity"]["expected"] == "a number of at most 1,000,000"
    assert problems["refund_amount"]["expected"] == "a number of at most 1,000,000,000"


def test_a_json_array_is_422(api: Api) -> None:
    response = api.assess([1, 2])
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["field"] == "$"


def test_body_over_the_limit_is_413(api: Api, body: dict[str, Any]) -> None:
    body["reason"] = "x" * (300 * 1024)
    response = api.assess(body)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"


def test_a_chunked_body_over_the_limit_is_413_and_one_within_it_is_read_whole(api: Api, body: dict[str, Any]) -> None:
    """Without a Content-Length werkzeug cut the body at the limit: padded past it with spaces it was taken, and
    a JSON body over it was 'not JSON'."""
    import io

    def chunked(data: bytes) -> Any:  # as gunicorn hands on a chunked request: no CONTENT_LENGTH, input terminated
        return api.client.post("/v1/returns/assess", input_stream=io.BytesIO(data), content_type="application/json",
                               headers={**api.headers("scoring"), "Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})

    padded = chunked(json.dumps(body).encode() + b" " * (400 * 1024))
    assert padded.status_code == 413 and padded.get_json()["error"] == "request_entity_too_large"
    over = chunked(json.dumps({**body, "reason": "x" * (300 * 1024)}).encode())
    assert over.status_code == 413
    within = chunked(json.dumps(body).encode() + b" " * (200 * 1024))
    assert within.status_code == 201, within.get_json()
    empty = chunked(b"")
    assert empty.status_code == 400 and "JSON object" in empty.get_json()["message"]
    forced = api.client.post("/v1/models/v0001/promote", input_stream=io.BytesIO(b'{"force": true}'),
                             content_type="application/json",
                             headers={**api.headers("admin"), "Transfer-Encoding": "chunked"},
                             environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert forced.status_code == 422 and forced.get_json()["problems"][0]["field"] == "reason"  # was read as {}

    class Malformed(io.BytesIO):  # as gunicorn's chunk parser meets `zz` where a chunk's size belongs
        def read(self, size: int | None = -1) -> bytes:
            from gunicorn.http.errors import InvalidChunkSize

            raise InvalidChunkSize(b"zz")

    malformed = api.client.post("/v1/returns/assess", input_stream=Malformed(), content_type="application/json",
                                headers={**api.headers("scoring"), "Transfer-Encoding": "chunked"},
                                environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert malformed.status_code == 400 and "chunked body is malformed" in malformed.get_json()["message"]
    assert "256 KiB" in padded.get_json()["message"]  # the limit, named


def test_unknown_path_and_method_answer_json(api: Api) -> None:
    missing = api.client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = api.client.get("/v1/returns/assess", headers=api.headers())
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"
    doubled = api.client.post("/v1//returns/assess", headers=api.headers(), json={})
    assert doubled.status_code == 404 and doubled.get_json()["error"] == "not_found"  # not an HTML 308


# --- lists -----------------------------------------------------------------------------------------------
def test_lists_lifecycle_is_recorded_as_evidence(api: Api) -> None:
    value = f"addr-{uuid.uuid4().hex[:8]}"
    entry = {"entity": "address", "value": value, "list": "block", "reason": "parcel drop"}
    created = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
    assert created.status_code == 201
    assert created.get_json()["added_by"].startswith("key:")
    again = api.client.post("/v1/lists", json={**entry, "list": "allow"}, headers=api.headers("admin"))
    assert again.status_code == 409
    listed = api.client.get("/v1/lists", headers=api.headers("analyst")).get_json()["entries"]
    assert [e["list"] for e in listed if e["value"] == value] == ["block"]
    assert api.client.delete(f"/v1/lists/address/{value}", headers=api.headers("admin")).status_code == 204
    assert api.client.delete(f"/v1/lists/address/{value}", headers=api.headers("admin")).status_code == 404
    with api.service.sessions() as session:
        kinds = session.execute(select(EvidenceEvent.kind).where(EvidenceEvent.subject == f"address:{value}")
                                .order_by(EvidenceEvent.seq)).scalars().all()
        assert kinds == ["list_added", "list_removed"]
        assert chain.verify(session).ok


def test_a_list_entry_starting_with_a_slash_is_removed_itself_not_its_namesake(api: Api) -> None:
    """`DELETE /v1/lists/device/%2Fdev-x` was redirected (slashes merged) to `/v1/lists/device/dev-x`, which took the
    other entry off its list; a token may start with a slash or hold two in a row."""
    tag = uuid.uuid4().hex[:8]
    values = [f"dev-{tag}", f"/dev-{tag}", f"dev//{tag}"]
    for value in values:
        entry = {"entity": "device", "value": value, "list": "block", "reason": "reseller"}
        assert api.client.post("/v1/lists", json=entry, headers=api.headers("admin")).status_code == 201

    def listed() -> list[str]:
        entries = api.client.get("/v1/lists", headers=api.headers("analyst")).get_json()["entries"]
        return sorted(e["value"] for e in entries if tag in e["value"])

    for gone, path in ((values[1], f"%2Fdev-{tag}"), (values[2], f"dev//{tag}")):
        answer = api.client.delete(f"/v1/lists/device/{path}", headers=api.headers("admin"))
        assert answer.status_code == 204, (path, answer.status_code)
        assert gone not in listed() and values[0] in listed()
    assert listed() == [values[0]]


def test_a_list_value_with_invisible_characters_is_refused_by_code_point(api: Api) -> None:
    """A value with a tab or a zero-width space can never match a request (which refuses such ids) but reads as a
    real token on the lists page."""
    for value, code in (("dev\u200b1", "U+200B"), ("dev\t1", "U+0009")):
        entry = {"entity": "device", "value": value, "list": "block", "reason": "reseller"}
        answer = api.client.post("/v1/lists", json=entry, headers=api.headers("admin"))
        assert answer.status_code == 422, answer.get_json()
        problem = answer.get_json()["problems"][0]
        assert problem["field"] == "value" and code in problem["problem"], problem


def test_bad_list_entry_lists_every_field(api: Api) -> None:
    response = api.client.post("/v1/lists", json={"entity": "planet", "list": "grey", "value": " "},
                               headers=api.headers("admin"))
    assert response.status_code == 422
    assert {p["field"] for p in response.get_json()["problems"]} == {"entity", "list", "value", "reason"}


# --- status, metrics, logs, OpenAPI ----------------------------------------------------------------------
def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").get_json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.get_json()["checks"]
    assert checks["model"]["version"] == api.service.assessor.scorer.version
    assert checks["database"]["ok"] and checks["feature_store"]["ok"]


def test_metrics_count_decisions_and_latency(api: Api, body: dict[str, Any]) -> None:
    def decisions(text_: str, decision: str) -> float:
        for line in text_.splitlines():
            if line.startswith("fraud_decisions_total{") and f'decision="{decision}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    assert api.client.get("/metrics").status_code == 401  # the figures say how the service is used
    assert api.client.get("/metrics", headers=api.headers("scoring")).status_code == 403
    # outside `serve`, prometheus_client keeps a counter's value in a file of this process's, by name and labels,
    # so an app made earlier in this process (the other parametrisation) left its count there: the series start
    # from it once they exist, so make them exist before counting
    version = api.service.assessor.scorer.version
    for kind in Decision:
        api.client.application.extensions["metrics"].decisions.labels(kind.value, version)
    before = api.client.get("/metrics", headers=api.headers("metrics")).get_data(as_text=True)
    decision = api.assess(body).get_json()["decision"]
    api.assess(body)  # a replay is not a second decision
    after = api.client.get("/metrics", headers=api.headers("admin")).get_data(as_text=True)
    assert decisions(after, decision) == decisions(before, decision) + 1
    assert f'fraud_model_info{{model_version="{version}"' in after
    assert 'fraud_http_request_duration_seconds_bucket{endpoint="/v1/returns/assess"' in after
    for verb in ("PROBEA", "PROBEB"):  # anyone may send a made-up method: it must not grow the metrics
        api.client.open("/v1/cases", method=verb)
    grown = api.client.get("/metrics", headers=api.headers("admin")).get_data(as_text=True)
    assert "PROBE" not in grown and 'method="other"' in grown


def test_request_id_is_echoed_and_logged(api: Api, body: dict[str, Any]) -> None:
    import io
    import logging

    from api.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("api.requests").addHandler(handler)
    try:
        response = api.client.post("/v1/returns/assess", json=body,
                                   headers=api.headers(**{"X-Request-ID": "abc-123"}))
        error = api.client.get("/v1/assessments/asm_none", headers=api.headers(**{"X-Request-ID": "def-456"}))
        respelled = api.client.get("/", headers={"X-Request-ID": "ghi-789"}, environ_overrides={
            "RAW_URI": "//healthz?x=1", "PATH_INFO": "//healthz", "QUERY_STRING": "x=1"})  # as gunicorn hands it
    finally:
        logging.getLogger("api.requests").removeHandler(handler)
    assert response.headers["X-Request-ID"] == "abc-123"
    assert error.get_json()["request_id"] == "def-456"
    logged = {line["request_id"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    assert logged["abc-123"]["status"] == 201 and logged["abc-123"]["path"] == "/v1/returns/assess"
    assert logged["abc-123"]["key_id"] == api.keys["scoring"].split("_")[1]
    assert logged["def-456"]["status"] == 404 and logged["def-456"]["level"] == "info"
    assert respelled.status_code == 404 and logged["ghi-789"]["path"] == "//healthz"  # was logged as "/healthz"
    generated = api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(generated) == 32 and " " not in generated


def test_openapi_document_describes_the_routes(api: Api) -> None:
    from openapi_spec_validator import validate

    document = api.client.get("/openapi.json").get_json()
    validate(document)
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in api.app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.rule.startswith("/v1/") or rule.rule in ("/healthz", "/readyz")}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes - documented == set()


# --- the database goes away ------------------------------------------------------------------------------
def test_unreachable_database_is_503_and_nothing_is_decided(serving_home: Path, trained_world: TrainedWorld,
                                                            tmp_path: Path) -> None:
    from api.app import create_app
    from fraud_service import bootstrap

    settings = Settings.from_env({"FRAUD_HOME": str(serving_home),
                                  "FRAUD_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    service = bootstrap.build(settings, freshness=False, warm_up=False)
    try:
        assert any("evidence database" in p for p in service.problems)
        assert not any("127.0.0.1" in p for p in service.problems), service.problems  # /readyz may show them
        app = create_app(settings, {"SERVICE": service, "TESTING": True})
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.get_json()["checks"]["database"]["ok"]
        response = client.post("/v1/returns/assess", json={}, headers={"Authorization": "Bearer fsk_a_b"})
        assert response.status_code == 503
        assert response.get_json()["error"] == "unavailable" and response.headers["Retry-After"] == "5"
        for answer in (ready.get_data(as_text=True), response.get_data(as_text=True)):  # the driver's text is logged
            assert "evidence database" in answer and "127.0.0.1" not in answer and "port 1" not in answer, answer
    finally:
        service.close()


@pytest.mark.redis
def test_a_service_started_while_redis_is_down_starts_not_ready_instead_of_failing_to_boot(
        serving_home: Path, trained_world: TrainedWorld) -> None:
    """The warm-up's feature read failed and the worker did not boot (gunicorn gave up, exit 3); now it warms the
    model alone, serves, and `/readyz` names the online store until Redis answers."""
    from api.app import create_app
    from fraud_service import bootstrap

    settings = Settings.from_env({"FRAUD_HOME": str(serving_home), "FRAUD_ONLINE_STORE": "redis",
                                  "FRAUD_REDIS_URL": "redis://127.0.0.1:1/0"})
    service = bootstrap.build(settings, freshness=False, warm_up=True, watch=False)
    try:
        assert service.assessor is not None  # it scores once Redis answers
        assert not any("redis" in problem.lower() for problem in service.problems), service.problems
        ready = create_app(settings, {"SERVICE": service, "TESTING": True}).test_client().get("/readyz")
        assert ready.status_code == 503 and not ready.get_json()["checks"]["feature_store"]["ok"]
    finally:
        service.close()


@pytest.mark.parametrize("damage", ["online store never materialised", "live log not a database",
                                    "feature manifest not JSON"])
def test_a_damaged_feature_store_file_is_not_ready_and_503_not_a_worker_that_dies(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path, damage: str) -> None:
    """A helper's probe: with the SQLite online store missing, the warm-up's read raised and the worker did not boot
    (gunicorn then stopped the whole service, its healthy workers too); a truncated store answered 500; a damaged
    live-fact log or feature manifest killed `serve` too. Now each is a service that starts not ready, says why, and
    answers 503."""
    from api.app import create_app
    from fraud_service import bootstrap
    from fraud_service.access.keys import create_key

    home = private_home(serving_home, tmp_path / "home")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}"})
    if damage == "online store never materialised":
        (home / "feature_repo" / "online_store.db").unlink()
        said = "the online feature store (sqlite) cannot be read (its file is missing, damaged or was never loaded)"
    elif damage == "live log not a database":
        for stale in ("live.db-wal", "live.db-shm"):  # a log whose pages are all in its WAL still reads whole
            (home / "features" / stale).unlink(missing_ok=True)
        (home / "features" / "live.db").write_bytes(b"not a database, " * 512)
        said = "move features/live.db aside and restart the service"
    else:
        (home / "features" / "manifest.json").write_text("{truncated")
        said = "manifest.json cannot be read"
    from fraud_service.health import check_features

    files = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    doctor = check_features(settings)  # it said "ok" for the first two, and failed unexpectedly on the third
    diagnosis = {"online store never materialised": "online_store.db does not exist",
                 "live log not a database": "live.db cannot be read (file is not a database)"}.get(damage, said)
    assert not doctor.ok and diagnosis in doctor.detail, doctor
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == files  # a diagnosis creates nothing
    service = bootstrap.build(settings, freshness=True, warm_up=True, watch=False, dispatch=False, assign=False)
    try:
        upgrade(service.engine)
        key = create_key(service.uow(), "scoring", "damaged", "test")
        client = create_app(settings, {"SERVICE": service, "TESTING": True}).test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and said in ready.get_data(as_text=True), ready.get_json()
        body = body_from_dataset(trained_world.dataset, str(pd.read_parquet(
            trained_world.dataset / "returns.parquet")["return_id"].iloc[0]), return_id="damaged-1")
        answer = client.post("/v1/returns/assess", json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 503, answer.get_json()
        assert said in answer.get_json()["message"] and "decision" not in answer.get_json()
    finally:
        service.close()


@contextlib.contextmanager
def _own_postgres_api(serving_home: Path, trained_world: TrainedWorld, tmp_path: Path,
                      freshness: bool = False) -> Iterator[tuple[Api, str, Any]]:
    """A service on a PostgreSQL database of its own (a test may break it), dropped afterwards; yields the service,
    the database's name and an AUTOCOMMIT engine on the server's `postgres` database."""
    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                  "FRAUD_DATABASE_URL": f"{POSTGRES}/{name}"})
    api = make_api(settings, trained_world.dataset, "postgres", freshness=freshness)
    try:
        yield api, name, admin
    finally:
        api.service.close()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_database_lost_mid_life_is_503_without_a_decision(serving_home: Path, trained_world: TrainedWorld,
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The key is cached and the model loaded; the database disappears; assess answers 503 and decides nothing."""
    with _own_postgres_api(serving_home, trained_world, tmp_path, freshness=True) as (api, name, admin):
        returns = pd.read_parquet(api.dataset / "returns.parquet")
        first = api.body(str(returns["return_id"].iloc[0]), return_id="lost-1")
        second = api.body(str(returns["return_id"].iloc[1]), return_id="lost-2")
        assert api.assess(first).status_code == 201  # the scoring key is now cached in the worker
        api.service.assessor.freshness.drain()
        live_before = api.service.assessor.freshness.live.db.execute("SELECT count(*) FROM live_facts").fetchone()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        logging.getLogger("api").addHandler(caplog.handler)  # the app's loggers do not propagate
        try:
            response = api.assess(second)
        finally:
            logging.getLogger("api").removeHandler(caplog.handler)
        assert response.status_code == 503, response.get_json()
        got = response.get_json()
        assert got["error"] == "unavailable" and "no decision was made" in got["message"]
        assert name not in got["message"] and "127.0.0.1" not in got["message"], got  # no host, port or database
        logged = [r for r in caplog.records if r.name == "api" and r.getMessage().startswith("unavailable")]
        assert any(name in r.getMessage() and r.fields["request_id"] == got["request_id"] for r in logged), \
            [r.getMessage() for r in logged]  # the log has what the answer leaves out, by the answer's request id
        assert "decision" not in got and "score" not in got
        api.service.assessor.freshness.drain()
        live_after = api.service.assessor.freshness.live.db.execute("SELECT count(*) FROM live_facts").fetchone()
        assert live_after == live_before  # an unrecorded assessment does not move the counters either
        assert api.client.get("/readyz").status_code == 503


@pytest.mark.postgres
def test_a_database_that_answers_but_refuses_writes_is_not_ready_until_a_write_succeeds(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    """The disk under the evidence database is full: `SELECT 1` still answers, every evidence insert fails (here
    PostgreSQL's own disk_full error, raised by a trigger). Assessments answer 503 and `/readyz` says not ready, so a
    load balancer sends shoppers elsewhere; once a write succeeds again, it is ready."""
    with _own_postgres_api(serving_home, trained_world, tmp_path) as (api, name, _):
        returns = pd.read_parquet(api.dataset / "returns.parquet")
        database = create_engine(f"{POSTGRES}/{name}", isolation_level="AUTOCOMMIT")
        assert api.assess(api.body(str(returns["return_id"].iloc[0]), return_id="full-0")).status_code == 201
        assert api.client.get("/readyz").status_code == 200
        with database.connect() as connection:
            connection.execute(text("CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                                    "RAISE EXCEPTION 'could not extend file: No space left on device' USING "
                                    "ERRCODE = 'disk_full'; END $$"))
            connection.execute(text("CREATE TRIGGER full_disk BEFORE INSERT ON assessments FOR EACH ROW EXECUTE "
                                    "FUNCTION disk_full()"))
        refused = api.assess(api.body(str(returns["return_id"].iloc[1]), return_id="full-1"))
        assert refused.status_code == 503, refused.get_json()
        assert "No space" not in refused.get_json()["message"]
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        detail = ready.get_json()["checks"]["database"]["detail"]
        assert "refused the last write" in detail and "DiskFull" in detail and "No space" not in detail
        with database.connect() as connection:
            connection.execute(text("DROP TRIGGER full_disk ON assessments"))
        assert api.assess(api.body(str(returns["return_id"].iloc[2]), return_id="full-2")).status_code == 201
        assert api.client.get("/readyz").status_code == 200
        database.dispose()


def test_list_changes_from_another_worker_apply_after_the_cache_expires(api: Api) -> None:
    """A worker re-reads the lists every `ttl` seconds; a change made elsewhere is invisible until then."""
    import datetime as dt

    from fraud_service.scoring.lists import ListCache
    from fraud_service.store.schema import ListEntry

    now = [100.0]
    cache = ListCache(api.service.sessions, ttl=1.0, clock=lambda: now[0])
    value = f"dev-{uuid.uuid4().hex[:8]}"
    assert cache.matches({"device": value}) == []
    with api.service.sessions.begin() as session:  # as another worker would, straight into the database
        session.add(ListEntry(entity="device", value=value, list="block", reason="elsewhere", added_by="test",
                              added_at=dt.datetime.now(dt.UTC)))
    now[0] += 0.5
    assert cache.matches({"device": value}) == []
    now[0] += 0.6
    assert [(m.entity, m.value, m.list) for m in cache.matches({"device": value})] == [("device", value, "block")]
    with api.service.sessions.begin() as session:
        session.query(ListEntry).filter_by(entity="device", value=value).delete()


def test_every_503_says_when_to_try_again() -> None:
    """A service not ready (no model, no features) answered 503 without Retry-After; an unavailable store had it."""
    from flask import Flask

    from api import errors
    from fraud_service.errors import DatabaseDown, NotReady, Unavailable

    app = Flask(__name__)
    errors.register(app)
    for path, exc in (("/not-ready", NotReady("the feature store is not built")),
                      ("/unavailable", Unavailable("the evidence database cannot be reached")),
                      ("/down", DatabaseDown("the evidence database did not answer within 1.5 s"))):
        app.add_url_rule(path, path, lambda exc=exc: (_ for _ in ()).throw(exc))
    for path in ("/not-ready", "/unavailable", "/down"):
        answer = app.test_client().get(path)
        assert (answer.status_code, answer.headers.get("Retry-After")) == (503, "5"), path


def test_a_service_started_before_its_first_model_scores_once_one_is_there_without_a_restart(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    """`serve` before `train`: the worker said it had no model on /readyz for the rest of its life."""
    from api.app import create_app
    from fraud_service import bootstrap
    from fraud_service.access.keys import create_key

    home = private_home(serving_home, tmp_path / "home")
    (home / "models").rename(home / "models-trained-later")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"})
    upgrade(bootstrap.database(settings)[0])
    service = bootstrap.build(settings, freshness=False, dispatch=False, assign=False)
    try:
        assert service.assessor is None
        client = create_app(settings, {"SERVICE": service, "TESTING": True}).test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.get_json()["checks"]["model"]["ok"]
        (home / "models-trained-later").rename(home / "models")  # as `train` registers the first model
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.get("/readyz").status_code != 200:
            time.sleep(0.2)  # polling for the model to be picked up, not timing anything
        assert client.get("/readyz").get_json()["checks"]["model"] == {"ok": True, "version": "v0001",
                                                                      "policy": "v0001.p1"}
        assert service.problems == []
        key = create_key(service.uow(), "scoring", "first model", "test")
        source = str(pd.read_parquet(trained_world.dataset / "returns.parquet")["return_id"].iloc[0])
        answer = client.post("/v1/returns/assess", json=body_from_dataset(trained_world.dataset, source,
                                                                          return_id="after-first-model"),
                             headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 201 and answer.get_json()["model_version"] == "v0001"
    finally:
        service.close()


def test_bearer_strings_that_are_no_key_are_refused_and_not_kept(api: Api) -> None:
    """Each was looked up and cached for 30 s: 10,000 of 8 KB each held about 80 MB in every worker."""
    cache = api.app.extensions.setdefault("key_cache", {})
    before = set(cache)
    junk = [f"fsk_{n:012x}_" + "x" * 8000 for n in range(20)] + ["a" * 8000, "fsk__", "fsk_zz_abc", "Bearer"]
    for presented in junk:
        answer = api.client.get("/v1/cases", headers={"Authorization": f"Bearer {presented}"})
        assert answer.status_code == 401 and answer.get_json()["message"] == "the API key is unknown, malformed or " \
                                                                             "revoked"
    assert set(cache) - before == set()
    assert api.client.get("/v1/cases", headers=api.headers("analyst")).status_code == 200  # a real key still works


def test_two_keys_made_without_a_name_are_two_clients(api: Api) -> None:
    """Both were named "scoring key", and scoring keys of one name share assessments: each read and appealed the
    other's (found by a helper)."""
    from fraud_service.access.keys import authenticate, create_key

    first, second = (create_key(api.service.uow(), "scoring", None, "test") for _ in range(2))
    names = [authenticate(api.service.uow(), key).name for key in (first, second)]  # type: ignore[union-attr]
    assert names[0] != names[1] and all(re.fullmatch(r"scoring key [0-9a-f]{12}", n) for n in names), names
    source = str(pd.read_parquet(api.dataset / "returns.parquet")["return_id"].iloc[2])
    body = api.body(source, return_id=f"unnamed-{uuid.uuid4().hex[:8]}")
    made = api.client.post("/v1/returns/assess", json=body, headers={"Authorization": f"Bearer {first}"})
    assert made.status_code == 201
    path = f"/v1/assessments/{made.get_json()['assessment_id']}"
    assert api.client.get(path, headers={"Authorization": f"Bearer {first}"}).status_code == 200
    assert api.client.get(path, headers={"Authorization": f"Bearer {second}"}).status_code == 404


def test_a_sqlite_evidence_file_removed_or_replaced_while_serving_stores_nothing_until_it_is_back(
        serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> None:
    """`fraud.db` removed while the service ran: SQLite's open connections went on writing into the unlinked file
    and answering 201, and a new connection made an empty database at the path; the answers were in a file nobody
    would read again. Now nothing is stored while the file at the path is not the one the service opened: 503, and
    `/readyz` says why; no file is made at the path; with the file put back, it serves again."""
    import sqlite3

    database = tmp_path / "fraud.db"
    settings = Settings.from_env({"FRAUD_HOME": str(private_home(serving_home, tmp_path / "home")),
                                  "FRAUD_DATABASE_URL": f"sqlite:///{database}"})
    api = make_api(settings, trained_world.dataset, "sqlite")
    returns = pd.read_parquet(api.dataset / "returns.parquet")["return_id"].astype(str)
    aside = tmp_path / "moved.db"

    def stored(path: Path) -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return int(db.execute("SELECT count(*) FROM assessments").fetchone()[0])

    try:
        assert api.assess(api.body(returns.iloc[0], return_id="gone-0")).status_code == 201
        database.rename(aside)
        refused, ready = api.assess(api.body(returns.iloc[1], return_id="gone-1")), api.client.get("/readyz")
        assert (refused.status_code, ready.status_code) == (503, 503), refused.get_json()
        for words in (refused.get_json()["message"], ready.get_json()["checks"]["database"]["detail"]):
            assert "evidence database's file was removed" in words and str(tmp_path) not in words, words
        assert not database.exists()  # no empty database made at the path
        with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as other:  # another database, moved in
            other.execute("CREATE TABLE other (x)")
        (tmp_path / "other.db").rename(database)
        before = database.read_bytes()
        replaced = api.assess(api.body(returns.iloc[1], return_id="gone-3"))
        assert replaced.status_code == 503 and "was replaced" in replaced.get_json()["message"]
        assert database.read_bytes() == before  # left alone
        aside.replace(database)  # the file the service opened, back
        assert api.assess(api.body(returns.iloc[1], return_id="gone-4")).status_code == 201
        assert api.client.get("/readyz").status_code == 200
        assert stored(database) == 2  # gone-0 and gone-4: nothing was written while the file was away
    finally:
        api.service.close()
