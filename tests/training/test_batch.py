"""Batch scoring decides as the scoring API would have at each return's time: the policy, the lists as they stood
then, the hard rules; with the model version and the top reasons."""

from __future__ import annotations

import pandas as pd
import pytest

from fraud_service.bootstrap import evidence
from fraud_service.config import Settings
from fraud_service.scoring import lists
from fraud_service.scoring.policy import Decision, Policy
from tests.conftest import TRAIN_UNTIL
from tests.training.test_train_cli import on_world  # noqa: F401  (fixture)
from training.trainset import current_snapshot

pytestmark = pytest.mark.slow
END = pd.Timestamp("2025-08-01", tz="UTC")


def test_batch_decisions_follow_the_policy_the_lists_of_their_time_and_the_hard_rules(
        cli, on_world, trained_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FRAUD_DATABASE_URL", f"sqlite:///{tmp_path / 'evidence.db'}")
    assert cli("db", "upgrade")[0] == 0
    snapshot = current_snapshot(trained_world.settings.warehouse_dir)
    returns = snapshot.read("returns")
    returns = returns[(returns["requested_at"] >= TRAIN_UNTIL) & (returns["requested_at"] < END)]
    busiest = returns["customer_id"].value_counts().index[0]
    theirs = returns[returns["customer_id"] == busiest].sort_values("requested_at")
    assert len(theirs) >= 2
    cut = theirs["requested_at"].iloc[0] + (theirs["requested_at"].iloc[1] - theirs["requested_at"].iloc[0]) / 2
    with evidence(Settings.from_env()) as db:
        lists.add(db.uow(), entity="customer", value=busiest, list_name="block", reason="ring member",
                  actor="test", now=cut.to_pydatetime())

    out = tmp_path / "scores.parquet"
    code, stdout, err = cli("score-batch", "--from", "2025-07-01", "--to", "2025-08-01", "--out", str(out))
    assert code == 0, err
    assert "1 list entry in its history" in stdout
    scores = pd.read_parquet(out).merge(returns, on="return_id", how="left", validate="1:1")
    assert len(scores) == len(returns)
    assert set(scores["model_version"]) == {"v0001"} and set(scores["policy_version"]) == {"v0001.p1"}

    mine = scores[scores["customer_id"] == busiest].set_index("return_id")
    before, after = theirs["return_id"].iloc[0], theirs["return_id"].iloc[1:]
    assert "blocklist_customer" not in mine.loc[before, "rules_fired"]
    assert all(mine.loc[r, "decision"] == "deny" and "blocklist_customer" in mine.loc[r, "rules_fired"]
               for r in after)

    policy = Policy.from_dict(on_world.load("production").policy)
    plain = scores[scores["rules_fired"] == ""]
    expected = [policy.decide(s, c, t).value for s, c, t in zip(plain["score"], plain["channel"],
                                                                plain["return_type"], strict=True)]
    assert list(plain["decision"]) == expected and len(plain) > 0.5 * len(scores)

    orders = snapshot.read("orders")[["order_id", "order_total"]]
    with_total = scores.merge(orders, on="order_id", how="left")
    over = with_total[with_total["refund_amount"] > with_total["order_total"] * 1.01 + 0.01]
    assert all("refund_exceeds_order" in r for r in over["rules_fired"])
    severity = {d.value: d.severity for d in Decision}
    assert all(severity[d] >= severity["review"] for d in over["decision"])  # nothing is allowlisted here

    approved = scores[scores["decision"] == "approve"]
    assert (approved[["reason_1", "reason_2", "reason_3"]] == "").all().all()  # like the API: no reasons to give
    flagged = scores[scores["decision"] != "approve"]
    assert len(flagged) and (flagged["reason_1"] != "").mean() > 0.9
