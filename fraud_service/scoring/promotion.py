"""Promoting and rolling back the production model: the registry's alias moves and the move is evidence.

Both faces (`POST /v1/models/{ref}/promote`, `fraud-service models promote`) call these. The
alias move and its evidence event happen under the chain's lock in one unit of work; the registry
refuses a damaged model before it goes live. Running workers follow the alias within seconds
(`model_watch.py`). When there is no evidence database to hold the event (a CLI on a machine that
only trains), pass `uow=None`: the alias still moves.

The gate. A model becomes production only when its latest gate (`training/gate.py`, kept in the registry
beside it) was judged against the model that is production now, on a window after its label cutoff, and
passed. Otherwise `promote` refuses and says why; `force=True` with a reason overrides, and the event
then says it was forced and which gate it overrode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from fraud_service.errors import ModelNotFound, Problem, PromotionRefused, RegistryError, RequestInvalid
from fraud_service.store.schema import EvidenceEvent
from fraud_service.store.uow import UnitOfWork
from models.registry import FIRST_PRODUCTION, ModelRegistry

ALIAS = "production"
MAX_REASON = 2_000


@dataclass(frozen=True)
class AliasChange:
    """The production alias moved from `previous` to `version`."""

    kind: str  # model_promoted or model_rolled_back
    previous: str | None
    version: str
    reason: str
    overridden: str | None = None  # a forced promotion: the gate's refusal it overrode
    shadow_ended: str | None = None  # the shadow model, which became production and so stopped shadowing


def probe(registry: ModelRegistry, version: str, role: str = "promoted") -> None:
    """Load VERSION as a worker would (seal, features, policy) and score one row, or PromotionRefused saying why:
    a model that cannot serve never becomes production (nor the shadow: ROLE says which it was to be)."""
    from fraud_service.scoring.model import Scorer
    from fraud_service.scoring.policy import Policy

    refused = f"{version} cannot be {role}"
    try:
        scorer = Scorer.from_registry(registry, version)
        Policy.from_dict(scorer.policy)
        scored = float(scorer.probability(scorer.row({}))[0])
    except RegistryError as exc:
        raise PromotionRefused(f"{refused}: {exc}") from exc
    except Exception as exc:  # a model or policy LightGBM or the policy cannot read, whatever the error
        raise PromotionRefused(f"{refused}: it does not load and score ({type(exc).__name__}: {exc})") from exc
    if not 0.0 <= scored <= 1.0:
        raise PromotionRefused(f"{refused}: it scored a probe row {scored}, not a probability")


def check_reason(reason: object) -> str:
    """REASON stripped, or RequestInvalid: why the alias moves, in 1 to MAX_REASON characters."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise RequestInvalid([Problem("reason", f"got {reason!r}", f"why, in 1 to {MAX_REASON:,} characters")])
    return reason.strip()


def gate_refusal(registry: ModelRegistry, version: str) -> str | None:
    """Why VERSION has not earned production against the model that is production now (None: it has)."""
    current = registry.aliases().get(ALIAS)
    gate = registry.gate(version)
    again = f"judge it with `fraud-service models gate {version}`"
    if gate is None:
        return (f"{version} has no out-of-time evaluation (it was trained without a test window after its label "
                f"cutoff): {again}")
    against = gate.get("against")
    if current is not None and against != current:
        return f"{version}'s gate compared it with {against}, but production is now {current}: {again}"
    if not gate.get("passed"):
        return f"{version} did not pass its gate against {against}: " + "; ".join(gate.get("reasons") or ["no reason"])
    return None


def promote(registry: ModelRegistry, uow: UnitOfWork | None, *, ref: str, reason: object, actor: str,
            force: bool = False) -> AliasChange:
    """Make REF (a version, `latest` or `candidate`) the production model, if it passed its gate (or FORCE)."""
    reason = check_reason(reason)
    version = registry.resolve(ref)  # ModelNotFound for an unknown ref
    probe(registry, version)
    if force and uow is None:
        raise PromotionRefused("a forced promotion is recorded as evidence, and there is no evidence database here "
                               "(FRAUD_DATABASE_URL): run it where the service's database is")

    def move() -> AliasChange:
        aliases = registry.aliases()
        previous = aliases.get(ALIAS)
        if previous == version:
            raise PromotionRefused(f"{version} is already production")
        refusal = gate_refusal(registry, version)  # read under the chain lock: production cannot move meanwhile
        if refusal is not None and not force:
            raise PromotionRefused(f"{refusal}; or promote past the gate with a reason, recorded as evidence "
                                   "(`--force --reason TEXT` on the command line, `\"force\": true, \"reason\"` over "
                                   "HTTP)")
        try:
            registry.promote(version, reason)
        except ModelNotFound:
            raise
        except RegistryError as exc:
            raise PromotionRefused(str(exc)) from exc
        return AliasChange("model_promoted", previous, version, reason, overridden=refusal if force else None,
                           shadow_ended=_shadow_ended(aliases.get("shadow"), version))

    return _recorded(registry, uow, move, actor)


def rollback(registry: ModelRegistry, uow: UnitOfWork | None, *, reason: object, actor: str) -> AliasChange:
    """Put back the production model the current one replaced."""
    reason = check_reason(reason)

    def move() -> AliasChange:
        shadow_was = registry.aliases().get("shadow")
        try:
            previous, version = registry.rollback()
        except RegistryError as exc:
            raise PromotionRefused(str(exc)) from exc
        return AliasChange("model_rolled_back", previous, version, reason,
                           shadow_ended=_shadow_ended(shadow_was, version))

    return _recorded(registry, uow, move, actor)


def restore(registry: ModelRegistry, uow: UnitOfWork | None, *, production: str, reason: object,
            actor: str) -> AliasChange:
    """Write the registry's lost aliases file again with PRODUCTION (a version) as production, once it loads and
    scores (`probe`); a `model_aliases_restored` event when there is an evidence database."""
    reason = check_reason(reason)
    version = registry.resolve(production)  # ModelNotFound for an unknown version
    probe(registry, version)

    def move() -> AliasChange:
        try:
            registry.restore_aliases(version, reason)
        except ModelNotFound:
            raise
        except RegistryError as exc:
            raise PromotionRefused(str(exc)) from exc
        return AliasChange("model_aliases_restored", None, version, reason)

    return _with_evidence(uow, move, actor, _alias_payload,
                          lambda change: registry.forget_restore(change.version))  # no restored alias without it


def record_first_production(registry: ModelRegistry, uow: UnitOfWork, *, version: str, actor: str) -> bool:
    """A `model_promoted` event (from none) for VERSION when the registry made it production as it registered it (the
    first model, past its gate against the rules baseline): every production move is then in the evidence log, the
    first too. False when VERSION did not become production so, or the log already holds that move."""
    moves = [m for m in registry.history() if m.get("alias") == ALIAS]
    if not moves or (moves[0].get("from"), moves[0].get("to"), moves[0].get("reason")) != (None, version,
                                                                                           FIRST_PRODUCTION):
        return False
    with uow:
        uow.lock_chain()
        if uow.session.execute(select(EvidenceEvent.seq).where(EvidenceEvent.kind == "model_promoted",
                                                               EvidenceEvent.subject == f"model:{version}")).first():
            return False
        uow.record(kind="model_promoted", subject=f"model:{version}", actor=actor,
                   payload={"alias": ALIAS, "from": None, "to": version, "reason": FIRST_PRODUCTION,
                            "registered": True})
        uow.commit()
    return True


def _recorded(registry: ModelRegistry, uow: UnitOfWork | None, move: Callable[[], AliasChange],
              actor: str) -> AliasChange:
    """MOVE the production alias and record it (`_with_evidence`); undone when its event cannot be written."""
    return _with_evidence(uow, move, actor, _alias_payload,
                          lambda change: registry.put_back(change.previous, change.version))


def _alias_payload(change: AliasChange) -> dict[str, object]:
    """The evidence event's payload of a move of the production alias."""
    payload: dict[str, object] = {"alias": ALIAS, "from": change.previous, "to": change.version,
                                  "reason": change.reason}
    if change.overridden is not None:
        payload |= {"forced": True, "gate_refusal": change.overridden}
    if change.shadow_ended is not None:
        payload |= {"shadow_ended": change.shadow_ended}
    return payload


def _with_evidence(uow: UnitOfWork | None, move: Callable[[], AliasChange], actor: str,
                   payload: Callable[[AliasChange], dict[str, object]],
                   undo: Callable[[AliasChange], object]) -> AliasChange:
    """MOVE an alias with the chain locked, then commit its evidence event (PAYLOAD of the change); UNDO the move when
    the event cannot be written (no alias move without its evidence). Without UOW, just move it."""
    if uow is None:
        return move()
    with uow:
        uow.lock_chain()  # two moves at once are recorded in the order they moved the alias
        change = move()
        try:
            uow.record(kind=change.kind, subject=f"model:{change.version}", actor=actor, payload=payload(change))
            uow.commit()
        except BaseException:
            undo(change)
            raise
        return change


def _shadow_ended(shadow_was: str | None, version: str) -> str | None:
    """VERSION when it was the shadow before it became production: the registry ended its shadow in the same move
    (production is never its own shadow). Decided without reading the aliases again: a read that failed after the
    move left it moved with neither its event nor its undo."""
    return version if shadow_was == version else None


def shadow(registry: ModelRegistry, uow: UnitOfWork | None, *, ref: str | None, reason: object,
           actor: str) -> AliasChange:
    """Make REF the shadow model, which scores every live request beside production without changing any answer
    (None: turn the shadow off). The production model cannot be its own shadow."""
    reason = check_reason(reason)
    version = None if ref is None else registry.resolve(ref)
    if version is not None:
        if version == registry.aliases().get(ALIAS):
            raise PromotionRefused(f"{version} is the production model: a shadow is another model to compare with it")
        probe(registry, version, "the shadow")

    def move() -> AliasChange:
        try:
            previous, now = registry.set_shadow(version, reason)
        except RegistryError as exc:
            raise PromotionRefused(str(exc)) from exc
        return AliasChange("model_shadow_on" if now else "model_shadow_off", previous, now or str(previous), reason)

    return _with_evidence(uow, move, actor,
                          lambda change: {"alias": "shadow", "from": change.previous, "to": version,
                                          "reason": change.reason},
                          lambda change: registry.set_shadow(change.previous,
                                                             "put back: its evidence could not be written"))
