"""The web app's status endpoints report what the warehouse holds."""

from __future__ import annotations

import pytest

from api.app import create_app
from fraud_service.data.ingest import ingest


@pytest.fixture
def client(settings):
    return create_app(settings, {"TESTING": True}).test_client()


def test_healthz_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_status_before_any_ingest_says_so(client):
    assert client.get("/v1/status").get_json()["snapshot"] is None
    page = client.get("/").get_data(as_text=True)
    assert "Nothing is ingested yet" in page


def test_status_after_ingest_counts_the_rows(client, world_copy, warehouse):
    ingest(world_copy, warehouse)
    body = client.get("/v1/status").get_json()
    assert body["snapshot"] == "000001"
    assert body["tables"]["returns"] == warehouse.current().rows("returns") > 0
    page = client.get("/").get_data(as_text=True)
    assert "Warehouse snapshot <strong>000001</strong>" in page
    assert f"{body['tables']['orders']:,}" in page


def test_start_page_says_when_features_are_missing_or_stale(client, world_copy, warehouse, settings):
    import json

    ingest(world_copy, warehouse)
    assert "No features built yet" in client.get("/").get_data(as_text=True)
    (settings.home / "features").mkdir(parents=True)
    (settings.home / "features" / "manifest.json").write_text(json.dumps(
        {"snapshot": "000000", "built_at": "2026-01-01T00:00:00+00:00", "rows": {"customer": 12, "customer_live": 0}}))
    page = client.get("/").get_data(as_text=True)
    assert "older than the current snapshot" in page
    assert "<td>customer</td>" in page and "customer_live" not in page


def test_without_a_key_or_a_person_no_path_or_fingerprint_is_shown(settings, world_copy, warehouse):
    import json

    from fraud_service.access.keys import create_key
    from fraud_service.bootstrap import evidence

    ingest(world_copy, warehouse)
    (settings.home / "features").mkdir(parents=True)  # a feature build's manifest names the fingerprint too
    (settings.home / "features" / "manifest.json").write_text(json.dumps(
        {"snapshot": "000001", "fingerprint": warehouse.current().manifest["fingerprint"],
         "built_at": "2026-01-01T00:00:00+00:00", "rows": {"customer": 12}}))
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    with evidence(settings, migrated=False) as db:
        db.upgrade()
        key = create_key(db.uow(), "analyst", "status reader", "test")
    public = client.get("/v1/status").get_json()
    assert "fingerprint" not in public and "source" not in public and "warehouse" not in public
    assert warehouse.current().manifest["fingerprint"] not in json.dumps(public)
    assert public["features"] == {"snapshot": "000001", "built_at": "2026-01-01T00:00:00+00:00",
                                  "rows": {"customer": 12}}
    assert public["tables"]["returns"] > 0
    page = client.get("/").get_data(as_text=True)
    fingerprint = warehouse.current().manifest["fingerprint"]
    assert fingerprint not in page and str(world_copy) not in page and str(settings.home) not in page
    known = client.get("/v1/status", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert known["fingerprint"] == fingerprint and known["source"] == str(world_copy.resolve())
    assert fingerprint in client.get("/", headers={"Authorization": f"Bearer {key}"}).get_data(as_text=True)
