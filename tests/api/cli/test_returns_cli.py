"""`fraud-service returns outcome|inspect|appeal` and `fraud-service webhooks add|list|deliveries|replay|remove` on a
real SQLite evidence database: the same core services as the API, with clear errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest

from fraud_service.bootstrap import database
from fraud_service.config import Settings
from fraud_service.scoring.evidence import evidence_writer

Cli = Callable[..., tuple[int, str, str]]
AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def assessed(settings: Settings, decision: str) -> dict[str, str]:
    """An assessment stored the way the assessor stores one (row, evidence payload with its request)."""
    engine, _ = database(settings)
    writer = evidence_writer(engine)
    rid = f"r-{decision}"
    row = {"id": f"asm_{decision}", "return_id": rid, "customer_id": "c-1", "request_hash": "h" * 64,
           "created_at": AT, "score": 0.4, "decision": decision, "risk_level": "medium", "model_version": "v0001",
           "policy_version": "p1", "refund_amount": 30.0, "case_id": None, "reason": "timing"}
    request = {"return_id": rid, "customer_id": "c-1", "requested_at": AT.isoformat(), "return_type": "return",
               "refund_token": None, "order": {"address_token": "a-1", "payment_token": "p-1", "device_token": None}}
    payload = {"request_hash": "h" * 64, "request": request, "features": {},
               "response": {"decision": decision, "model_decision": decision, "return_id": rid, "reasons": [],
                            "rules_fired": []}}
    try:
        assert writer.store(row, payload, "key:test", AT, None) is not None
    finally:
        writer.close()
        engine.dispose()
    return row


def test_outcome_inspect_and_appeal_from_the_command_line(cli: Cli, settings: Settings) -> None:
    assert cli("db", "upgrade")[0] == 0
    row = assessed(settings, "approve_after_inspection")
    code, out, _ = cli("returns", "outcome", row["id"])
    assert code == 0 and json.loads(out)["outcome"]["status"] == "pending_inspection"
    code, _, err = cli("returns", "inspect", "r-none", "ok")
    assert code == 1 and "no assessment of return 'r-none'" in err
    code, _, err = cli("returns", "inspect", row["return_id"], "ok", "--at", "not a time")
    assert code == 2 and "ISO 8601" in err
    code, _, err = cli("returns", "inspect", row["return_id"], "ok", "--at", "0001-01-01T00:00:00+01:00")
    assert code == 2 and "is before the first time in UTC" in err  # was an OverflowError traceback
    at = (AT + dt.timedelta(days=2)).isoformat()
    code, out, _ = cli("returns", "inspect", row["return_id"], "ok", "--at", at, "--notes", "as new")
    assert code == 0
    done = json.loads(out)
    assert (done["label"], done["assessment_outcome"]["status"], done["assessment_outcome"]["decision"]) == (
        "legit", "final", "approve")
    code, out, err = cli("returns", "inspect", row["return_id"], "ok", "--at", at, "--notes", "as new")
    assert code == 0 and "reported before" in err
    code, _, err = cli("returns", "inspect", row["return_id"], "worn", "--at", at)
    assert code == 1 and "never replaced" in err
    code, _, err = cli("returns", "appeal", row["id"], "--message", "why?")
    assert code == 1 and "nothing to appeal" in err
    denied = assessed(settings, "store_credit_only")
    code, out, err = cli("returns", "appeal", denied["id"], "--message", "I want my money back, not credit")
    assert code == 0, err
    appealed = json.loads(out)
    assert appealed["outcome"]["status"] == "pending_review" and appealed["case_id"].startswith("cas_")


def test_webhooks_from_the_command_line(cli: Cli, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("db", "upgrade")[0] == 0
    code, _, err = cli("webhooks", "add", "http://127.0.0.1:9/hook")
    assert code == 1 and "FRAUD_WEBHOOK_ALLOW_PRIVATE" in err
    monkeypatch.setenv("FRAUD_WEBHOOK_ALLOW_PRIVATE", "true")
    code, out, err = cli("webhooks", "add", "http://127.0.0.1:9/hook", "--events", "case.closed")
    assert code == 0 and "shown only now" in err
    hook_id, secret = out.split()[0], out.split()[-1]
    assert hook_id.startswith("whk_") and secret.startswith("whsec_")
    code, out, _ = cli("webhooks", "list")
    assert code == 0 and hook_id in out and "case.closed" in out and secret not in out
    assert "no deliveries" in cli("webhooks", "deliveries", hook_id)[1]
    code, _, err = cli("webhooks", "replay", "evt_none")
    assert code == 1 and "no event 'evt_none'" in err
    code, _, err = cli("webhooks", "deliveries", hook_id, "--limit", "0")
    assert code == 2 and "--limit: 0 must be greater than 0" in err
    assert cli("webhooks", "remove", hook_id)[0] == 0
    code, _, err = cli("webhooks", "remove", hook_id)
    assert code == 1 and "no webhook" in err
    assert "no webhooks" in cli("webhooks", "list")[1]
