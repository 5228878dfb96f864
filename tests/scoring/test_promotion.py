"""Promotion and rollback, written once for both faces: the alias moves with its evidence event, or not at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fraud_service.errors import DatabaseDown, ModelNotFound, PromotionRefused, RequestInvalid
from fraud_service.scoring import promotion
from fraud_service.store.schema import EvidenceEvent
from fraud_service.store.uow import UnitOfWork
from models.registry import ModelRegistry
from tests.conftest import TrainedWorld
from tests.factories import MemoryDb, memory_db


@pytest.fixture
def db() -> Iterator[MemoryDb]:
    with memory_db() as db:
        yield db


@pytest.fixture
def registry(tmp_path: Path, trained_world: TrainedWorld) -> ModelRegistry:
    """Two versions of a real trained model (promotion loads and scores a probe row before moving the alias)."""
    real = ModelRegistry(trained_world.settings.models_dir).load("production")
    registry = ModelRegistry(tmp_path / "models")
    registry.register(real.model_text(), {**real.manifest, "note": "first"}, real.policy, first_production=True)
    registry.register(real.model_text(), {**real.manifest, "note": "second"}, real.policy, gate=PASSED)
    return registry


PASSED = {"against": "v0001", "passed": True, "reasons": []}


def events(db: MemoryDb) -> list[tuple[str, str, str]]:
    with db.sessions() as session:
        rows = session.execute(select(EvidenceEvent.kind, EvidenceEvent.subject, EvidenceEvent.payload)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_promote_and_rollback_move_the_alias_each_with_its_event(db: MemoryDb, registry: ModelRegistry) -> None:
    change = promotion.promote(registry, db.uow(), ref="candidate", reason="  better AP  ", actor="user:ana")
    assert (change.previous, change.version, change.reason) == ("v0001", "v0002", "better AP")
    assert registry.aliases()["production"] == "v0002"
    back = promotion.rollback(registry, db.uow(), reason="drift", actor="cli:root")
    assert (back.kind, back.previous, back.version) == ("model_rolled_back", "v0002", "v0001")
    kinds = [(k, s) for k, s, _ in events(db)]
    assert kinds == [("model_promoted", "model:v0002"), ("model_rolled_back", "model:v0001")]
    assert '"from":"v0001"' in events(db)[0][2] and '"reason":"better AP"' in events(db)[0][2]


def test_refusals_leave_the_alias_and_the_log_alone(db: MemoryDb, registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound, match="no model version 'v0009'"):
        promotion.promote(registry, db.uow(), ref="v0009", reason="r", actor="t")
    with pytest.raises(PromotionRefused, match="v0001 is already production"):
        promotion.promote(registry, db.uow(), ref="v0001", reason="r", actor="t")
    with pytest.raises(PromotionRefused, match="no earlier production model"):
        promotion.rollback(registry, db.uow(), reason="r", actor="t")
    with pytest.raises(RequestInvalid, match="reason"):
        promotion.promote(registry, db.uow(), ref="v0002", reason=" ", actor="t")
    assert registry.aliases()["production"] == "v0001" and events(db) == []


class _EvidenceFails(UnitOfWork):
    """A unit of work whose evidence write fails, as a database that went away would make it."""

    def record(self, **kwargs: Any) -> Any:
        raise DatabaseDown("the evidence database cannot be reached")


def test_an_alias_whose_evidence_cannot_be_written_moves_back(db: MemoryDb, registry: ModelRegistry) -> None:
    history = len(registry.history())
    with pytest.raises(DatabaseDown):
        promotion.promote(registry, _EvidenceFails(db.sessions), ref="v0002", reason="r", actor="t")
    assert registry.aliases()["production"] == "v0001"
    assert len(registry.history()) == history
    assert events(db) == []


def test_without_an_evidence_database_the_alias_still_moves(registry: ModelRegistry) -> None:
    change = promotion.promote(registry, None, ref="latest", reason="offline", actor="cli:root")
    assert change.version == "v0002" and registry.aliases()["production"] == "v0002"


@pytest.mark.parametrize("gate, refusal", [
    (None, "v0003 has no out-of-time evaluation .*fraud-service models gate v0003"),
    ({"against": "v0009", "passed": True}, "v0003's gate compared it with v0009, but production is now v0001"),
    ({"against": "v0001", "passed": False, "reasons": ["average precision is 0.1000 lower than v0001's"]},
     "v0003 did not pass its gate against v0001: average precision is 0.1000 lower"),
])
def test_a_model_without_a_passed_gate_against_production_is_refused_and_says_why(
        db: MemoryDb, registry: ModelRegistry, gate: dict[str, Any] | None, refusal: str) -> None:
    real = registry.load("v0001")
    registry.register(real.model_text(), {**real.manifest, "note": "third"}, real.policy, gate=gate)
    with pytest.raises(PromotionRefused, match=refusal + ".*--force"):
        promotion.promote(registry, db.uow(), ref="v0003", reason="r", actor="t")
    with pytest.raises(PromotionRefused, match="no evidence database"):
        promotion.promote(registry, None, ref="v0003", reason="r", actor="t", force=True)
    assert registry.aliases()["production"] == "v0001" and events(db) == []
    change = promotion.promote(registry, db.uow(), ref="v0003", reason="the old one leaks", actor="user:ana",
                               force=True)
    assert change.version == "v0003" and change.overridden is not None
    assert registry.aliases()["production"] == "v0003"
    (kind, subject, payload), = events(db)
    assert (kind, subject) == ("model_promoted", "model:v0003")
    body = json.loads(payload)
    assert body["forced"] is True and body["reason"] == "the old one leaks"
    assert body["gate_refusal"] == change.overridden and "v0003" in body["gate_refusal"]


def test_a_gate_judged_against_a_production_model_that_has_since_been_replaced_no_longer_counts(
        db: MemoryDb, registry: ModelRegistry) -> None:
    real = registry.load("v0001")
    registry.register(real.model_text(), {**real.manifest, "note": "third"}, real.policy, gate=PASSED)
    promotion.promote(registry, db.uow(), ref="v0002", reason="passed", actor="t")
    with pytest.raises(PromotionRefused, match="v0003's gate compared it with v0001, but production is now v0002"):
        promotion.promote(registry, db.uow(), ref="v0003", reason="r", actor="t")


def test_a_rollback_to_the_shadow_model_ends_its_shadow_and_its_event_says_so(db: MemoryDb, tmp_path: Path) -> None:
    """Production and shadow named the same version after such a rollback (rollback loads, it does not probe, so
    stand-in model texts do)."""
    registry = ModelRegistry(tmp_path / "models")
    for text in ("one", "two"):
        registry.register(text, {"features": ["a"]}, {"review_from": 0.5}, first_production=True)
    registry.promote("v0002")
    registry.set_shadow("v0001", "compare")  # `promotion.shadow` would probe the stand-in model
    change = promotion.rollback(registry, db.uow(), reason="drift", actor="cli:root")
    assert (change.previous, change.version, change.shadow_ended) == ("v0002", "v0001", "v0001")
    assert registry.aliases() == {"production": "v0001", "candidate": "v0002"}
    assert json.loads(events(db)[-1][2])["shadow_ended"] == "v0001"


def test_restoring_lost_aliases_is_an_evidence_event_or_does_not_happen(db: MemoryDb, registry: ModelRegistry) -> None:
    (registry.root / "aliases.json").unlink()
    with pytest.raises(DatabaseDown):
        promotion.restore(registry, _EvidenceFails(db.sessions), production="v0002", reason="r", actor="t")
    assert not (registry.root / "aliases.json").exists() and events(db) == []
    change = promotion.restore(registry, db.uow(), production="2", reason="deleted by a cleanup", actor="cli:root")
    assert (change.kind, change.previous, change.version) == ("model_aliases_restored", None, "v0002")
    assert registry.aliases() == {"production": "v0002", "candidate": "v0002"}
    kind, subject, payload = events(db)[0]
    assert (kind, subject, json.loads(payload)) == ("model_aliases_restored", "model:v0002", {
        "alias": "production", "from": None, "to": "v0002", "reason": "deleted by a cleanup"})


def test_the_first_model_registered_as_production_is_recorded_once(db: MemoryDb, registry: ModelRegistry) -> None:
    """The registry made it production as it registered it, with no event: the log named every production move but
    the first."""
    assert promotion.record_first_production(registry, db.uow(), version="v0002", actor="cli:t") is False  # not so
    assert promotion.record_first_production(registry, db.uow(), version="v0001", actor="cli:t") is True
    assert promotion.record_first_production(registry, db.uow(), version="v0001", actor="cli:t") is False  # once
    (kind, subject, payload), = events(db)
    assert (kind, subject) == ("model_promoted", "model:v0001")
    assert json.loads(payload) == {"alias": "production", "from": None, "to": "v0001", "registered": True,
                                   "reason": "first model: beat the rules baseline out of time"}
    promotion.promote(registry, db.uow(), ref="v0002", reason="better", actor="t")  # later moves are as before
    assert [json.loads(p)["to"] for _, _, p in events(db)] == ["v0001", "v0002"]


class _UnreadableAfterMoving(ModelRegistry):
    """A registry whose aliases file cannot be read once a promotion has moved it (a disk error at that moment)."""

    moved = False

    def promote(self, ref: str, reason: str = "promoted") -> str:
        version = super().promote(ref, reason)
        self.moved = True
        return version

    def aliases(self) -> dict[str, str]:
        if self.moved:
            from fraud_service.errors import RegistryError

            raise RegistryError("aliases.json cannot be read")
        return super().aliases()


def test_a_promotion_is_recorded_though_the_aliases_cannot_be_read_after_the_move(
        db: MemoryDb, registry: ModelRegistry) -> None:
    """The move read the aliases again to tell whether it ended a shadow, outside the part that undoes it: a failed
    read left production moved with no event."""
    registry.set_shadow("v0002", "compared live first")  # promoting the shadow ends it: that was read back
    shaky = _UnreadableAfterMoving(registry.root)
    promotion.promote(shaky, db.uow(), ref="v0002", reason="better", actor="t")
    assert ModelRegistry(registry.root).aliases() == {"production": "v0002", "candidate": "v0002"}
    (kind, subject, payload), = events(db)
    assert (kind, subject, json.loads(payload)["shadow_ended"]) == ("model_promoted", "model:v0002", "v0002")
