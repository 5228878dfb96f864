"""Schemathesis against /openapi.json: generated requests (valid and invalid) never get a 500 and never get
an answer the document does not describe (status code, content type, body schema, headers)."""

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

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="session")
def fuzz_api(serving_home: Path, trained_world: TrainedWorld,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("fuzz")
    home = private_home(serving_home, root / "home")  # generated admin calls may move the registry's aliases
    api = make_api(Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{root / 'fraud.db'}"}),
                   trained_world.dataset, "sqlite")
    yield api
    api.service.close()


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

    @given(case=target.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=fuzz_api.headers("admin"), checks=CHECKS)
        statuses.add(response.status_code)

    statuses: set[int] = set()
    run()
    if mode is GenerationMode.POSITIVE and operation == "POST /v1/returns/assess":
        assert 201 in statuses, statuses  # generated requests reached scoring and the evidence write
