"""The pydantic models are the API's bodies: real answers validate against the response models, and the
OpenAPI document's schemas are exactly what the models generate."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from api import entity_schemas, rule_schemas, schemas
from api.openapi import document
from fraud_service.scoring.request import ReturnRequestBody
from tests.api.conftest import Api
from tests.api.test_cases_api import open_case, post


def _valid(model: type[BaseModel], response: Any, status: int) -> None:
    assert response.status_code == status, response.get_json()
    model.model_validate(response.get_json())


def test_real_answers_validate_against_the_response_models(api: Api, set_policy: Any) -> None:
    case_id, returns = open_case(api, set_policy, returns=2)
    analyst = api.headers("analyst")
    assessment = api.client.get(f"/v1/cases/{case_id}", headers=analyst).get_json()["assessment_list"][0]
    _valid(schemas.Evidence, api.client.get(f"/v1/assessments/{assessment['assessment_id']}",
                                            headers=api.headers("scoring")), 200)
    _valid(schemas.CasePage, api.client.get("/v1/cases", headers=analyst), 200)
    _valid(schemas.CaseDetail, api.client.get(f"/v1/cases/{case_id}", headers=analyst), 200)
    _valid(schemas.CaseNote, post(api, f"/v1/cases/{case_id}/notes", {"body": "checked"}), 201)
    _valid(schemas.CaseSummary, post(api, f"/v1/cases/{case_id}/close", {"label": "legit", "reason": "fine"}), 200)
    _valid(rule_schemas.ListEntries, api.client.get("/v1/lists", headers=analyst), 200)
    _valid(rule_schemas.RulesOut, api.client.get("/v1/rules", headers=analyst), 200)
    _valid(rule_schemas.BacktestOut, api.client.post("/v1/rules/backtest", json={"rules": {}, "days": 7},
                                                     headers=api.headers("admin")), 200)
    customer = assessment["customer_id"]
    _valid(entity_schemas.SearchResult, api.client.get(f"/v1/search?q={customer}", headers=analyst), 200)
    _valid(entity_schemas.EntityPage, api.client.get(f"/v1/customers/{customer}", headers=analyst), 200)
    _valid(entity_schemas.Graph, api.client.get(f"/v1/cases/{case_id}/graph", headers=analyst), 200)
    _valid(schemas.Registry, api.client.get("/v1/models", headers=analyst), 200)
    _valid(schemas.ValidationErrorBody, post(api, f"/v1/cases/{case_id}/reopen", {"reason": ""}), 422)
    _valid(schemas.ErrorBody, api.client.get("/v1/cases/nope", headers=analyst), 404)
    with pytest.raises(ValidationError):  # the models do check: a summary without its status is not one
        schemas.CaseSummary.model_validate({k: v for k, v in post(api, f"/v1/cases/{case_id}/reopen", {
            "reason": "again"}).get_json().items() if k != "status"})


def test_the_documents_schemas_are_the_models():
    generated = document()["components"]["schemas"]
    for model in (ReturnRequestBody, *schemas.REQUESTS, *schemas.RESPONSES, *entity_schemas.ENTITY_RESPONSES,
                  *rule_schemas.RULE_REQUESTS, *rule_schemas.RULE_RESPONSES):
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        own.pop("$defs", None)
        assert generated[model.__name__] == own, model.__name__
