"""How long a rule backtest takes over a month of assessments (`POST /v1/rules/backtest`).

    .venv/bin/python bench/backtest_bench.py                      # 100,000 assessments over 30 days, SQLite
    .venv/bin/python bench/backtest_bench.py --assessments 20000 --database-url postgresql+psycopg://postgres@127.0.0.1/bt

Fills a fresh evidence database with ASSESSMENTS stored the way the service stores them (the evidence writer, a
payload of the size a real one has: the request, about 90 features, the answer with its reasons and SHAP
contributions), spread over the last 30 days, and a few list entries. Then it times, RUNS times each:

- baseline: reading the window's payloads and parsing them (what any replay must do);
- backtest: `backtest.run` with a proposed rule set (a changed threshold and two custom rules), labels included.

Prints the medians and the backtest's ratio to the baseline. The issue's target: under 10 s for 30 days of the
load bench's world.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from sqlalchemy import select

from fraud_service.scoring import backtest, lists
from fraud_service.scoring.evidence import evidence_writer
from fraud_service.store.db import make_engine, session_factory
from fraud_service.store.migrate import upgrade
from fraud_service.store.schema import Assessment, EvidenceEvent
from fraud_service.store.uow import UnitOfWork

FEATURES = 90
DECISIONS = ["approve"] * 90 + ["approve_after_inspection"] * 4 + ["store_credit_only"] * 2 + ["review"] * 3 + \
    ["deny"]
PROPOSED = {"builtin": {"shared_refund_destination": {"threshold": 2}},
            "custom": [{"name": "big_shared_refund", "when": "rfd_customers >= 2 and rt_refund_amount > 200",
                        "decision": "review"},
                       {"name": "new_account_inr", "when": "cust_account_age_days < 30 and rt_return_type == "
                                                           "'item_not_received'", "decision": "review"}]}


def _payload(rng: random.Random, i: int, at: dt.datetime, decision: str) -> dict[str, object]:
    names = [f"f_{k:02d}" for k in range(FEATURES - 5)]
    features: dict[str, object] = {n: round(rng.random() * 10, 4) for n in names}
    features |= {"rfd_customers": rng.choice([0, 0, 0, 1, 2, 3]), "rt_refund_amount": round(rng.uniform(5, 600), 2),
                 "cust_account_age_days": rng.uniform(0, 900), "cust_inr_90d": rng.choice([0, 0, 1, 2]),
                 "rt_return_type": rng.choice(["return", "return", "item_not_received"])}
    request = {"return_id": f"r{i:08d}", "customer_id": f"c{rng.randrange(20000):06d}", "return_type": "return",
               "channel": "mail", "reason": "size", "refund_amount": features["rt_refund_amount"],
               "refund_method": "original_payment", "refund_token": None, "requested_at": at.isoformat(),
               "order": {"order_id": f"o{i:08d}", "order_total": 700.0, "payment_token": f"pay{rng.randrange(30000)}",
                         "address_token": f"adr{rng.randrange(25000)}", "device_token": f"dev{rng.randrange(25000)}",
                         "placed_at": at.isoformat(), "items": [{"sku": "s1", "category": "apparel",
                                                                "unit_price": 50.0, "quantity": 2}]}}
    response = {"assessment_id": f"asm_{i:032d}", "return_id": request["return_id"], "score": rng.random(),
                "decision": decision, "model_decision": decision, "risk_level": "low",
                "reasons": [{"feature": n, "contribution": 0.1, "sentence": f"{n} is high"} for n in names[:5]],
                "rules_fired": [], "model_version": "v0001", "policy_version": "v0001.p1", "case_id": None,
                "assessed_at": at.isoformat()}
    return {"request_hash": "h" * 64, "request": request, "features": features, "feature_times": {},
            "raw_score": 0.1, "contributions": [round(rng.gauss(0, 0.1), 6) for _ in range(FEATURES)],
            "response": response, "rules_version": 0}


def fill(url: str, n: int, now: dt.datetime) -> None:
    engine = make_engine(url)
    upgrade(engine)
    writer = evidence_writer(engine)
    rng = random.Random(1)
    try:
        for i in range(n):
            at = now - dt.timedelta(seconds=30 * 86400 * (n - i) / n)
            decision = rng.choice(DECISIONS)
            payload = _payload(rng, i, at, decision)
            row = {"id": f"asm_{i:032d}", "return_id": f"r{i:08d}",
                   "customer_id": payload["request"]["customer_id"],  # type: ignore[index]
                   "request_hash": "h" * 64, "created_at": at, "score": 0.1, "decision": decision,
                   "risk_level": "low", "model_version": "v0001", "policy_version": "v0001.p1",
                   "refund_amount": payload["features"]["rt_refund_amount"],  # type: ignore[index]
                   "case_id": None, "reason": "timing"}
            writer.store(row, payload, "key:bench", at, None)
            if i % 20000 == 0 and i:
                print(f"  {i:,} stored", flush=True)
        uow = UnitOfWork(session_factory(engine))
        for k in range(20):
            lists.add(uow, entity="address", value=f"adr{k}", list_name="block", reason="bench", actor="bench",
                      now=now - dt.timedelta(days=40))
    finally:
        writer.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assessments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'fraud.db'}"
        started = time.perf_counter()
        print(f"storing {args.assessments:,} assessments over 30 days in {url.split('@')[-1]} ...", flush=True)
        fill(url, args.assessments, now)
        print(f"  stored in {time.perf_counter() - started:.1f} s")
        engine = make_engine(url)
        sessions = session_factory(engine)
        base, full = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            with UnitOfWork(sessions).read() as uow:
                query = select(EvidenceEvent.payload).join(Assessment, EvidenceEvent.seq == Assessment.event_seq) \
                    .where(Assessment.created_at >= now - dt.timedelta(days=30))
                parsed = sum(1 for (p,) in uow.session.execute(query.execution_options(yield_per=2000))
                             if orjson.loads(p))
            base.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = backtest.run(UnitOfWork(sessions), rules=PROPOSED, days=30, now=now, capacity=50.0)
            full.append(time.perf_counter() - t)
        engine.dispose()
    print(f"assessments in the window: {result.assessments:,} (read by the baseline: {parsed:,})")
    print(f"changed: {result.changed}")
    print(f"baseline (read + parse payloads): median {statistics.median(base):.2f} s of {args.runs}")
    print(f"backtest (30 days, proposed rules): median {statistics.median(full):.2f} s of {args.runs} "
          f"({statistics.median(full) / statistics.median(base):.2f}x the baseline)")


if __name__ == "__main__":
    main()
