"""Schemathesis against /openapi.json: generated requests (valid and invalid), sent with each of the three keys
(scoring, analyst, admin), never get a 500 and never get an answer the document does not describe (status code,
content type, body schema, headers); on SQLite and on PostgreSQL, at least 1,000 examples on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fraud_service.config import Settings
from tests.api.conftest import Api, make_api, private_home
from tests.conftest import TrainedWorld
from tests.store.conftest import postgres_engine

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


KEYS = ("scoring", "analyst", "admin")
EXAMPLES_PER_KEY = 15
MIN_EXAMPLES = 1000
_sent: dict[str, int] = {}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_api(request: pytest.FixtureRequest, serving_home: Path, trained_world: TrainedWorld,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("fuzz")
    home = private_home(serving_home, root / "home")  # generated admin calls may move the registry's aliases
    engines = postgres_engine() if request.param == "postgres" else None
    url = (next(engines).url.render_as_string(hide_password=False) if engines is not None
           else f"sqlite:///{root / 'fraud.db'}")
    api = make_api(Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": url}), trained_world.dataset,
                   request.param)
    _sent[request.param] = 0
    yield api
    api.service.close()
    if engines is not None:
        next(engines, None)
    assert _sent[request.param] >= MIN_EXAMPLES, f"only {_sent[request.param]} generated requests were sent"


def _operations() -> list[Any]:
    """Each documented operation, with valid inputs, and with invalid ones where it takes any."""
    from api.openapi import document

    cases = []
    for path, item in document()["paths"].items():
        for method, spec in item.items():
            modes = [GenerationMode.POSITIVE]
            if spec.get("parameters") or spec.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            cases += [pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
                      for mode in modes]
    return cases


@pytest.mark.parametrize(("operation", "mode"), _operations())
def test_api_answers_as_documented(fuzz_api: Api, operation: str, mode: GenerationMode) -> None:
    """Generated requests for one operation (deterministic examples, no example database)."""
    method, path = operation.split(" ", 1)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_api.app)
    target = schema[path][method]

    # a generated return passes the checks beyond the schema (times in order, unique lines) one time in ~20
    examples = 4 * EXAMPLES_PER_KEY if operation == "POST /v1/returns/assess" else EXAMPLES_PER_KEY

    def with_key(key: str) -> Any:
        @given(case=target.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call_and_validate(headers=fuzz_api.headers(key), checks=CHECKS)
            statuses.add(response.status_code)
            _sent[fuzz_api.backend] += 1

        return run

    statuses: set[int] = set()
    for key in KEYS:
        with_key(key)()
    if mode is GenerationMode.POSITIVE and operation == "POST /v1/returns/assess":
        assert 201 in statuses, statuses  # generated requests reached scoring and the evidence write
