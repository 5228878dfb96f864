"""The model registry's commands: models list|show|promote|gate|shadow|compare|rollback|restore-aliases."""

from __future__ import annotations

import argparse
import json
import sys

from api.cli.common import Subparsers, cli_actor, progress, timestamp
from api.cli.monitoring import cmd_models_compare, cmd_models_shadow
from fraud_service.config import Settings
from fraud_service.errors import BadRequest, RegistryError
from models.registry import ModelRegistry
from training.gate import summary as gate_summary


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the registered models with their aliases."""
    registry = ModelRegistry(settings.models_dir)
    versions = registry.versions()
    if not versions:
        print(f"no models in {settings.models_dir}: run `fraud-service train --train-until DATE`")
        return 0
    try:
        aliases, lost = registry.aliases(), None
    except RegistryError as exc:  # the versions are listed all the same: they are what a repair chooses from
        aliases, lost = {}, str(exc)
    print(f"{'version':<8} {'aliases':<22} {'trained until':<12} {'trees':>6} {'test AP':>8}  registered")
    damaged = []
    for version in versions:
        tags = ",".join(a for a, v in aliases.items() if v == version)
        try:
            m = registry.load(version).manifest
        except RegistryError as exc:  # the others are listed all the same
            damaged.append(version)
            print(f"{version:<8} {tags:<22} DAMAGED: {exc}")
            continue
        ap = ((m.get("metrics") or {}).get("test") or {}).get("average_precision")
        trees = m.get("trees") or m["best_iteration"]  # models trained before ensembles did not record it
        print(f"{version:<8} {tags:<22} {m['label_cutoff'][:10]:<12} {trees:>6} "
              f"{'-' if ap is None else f'{ap:.4f}':>8}  {m['registered_at']}")
    for alias, version in sorted(aliases.items()):
        if version not in versions:
            print(f"error: {alias} names {version}, which is not in {settings.models_dir}", file=sys.stderr)
    if damaged:
        print(f"error: {', '.join(damaged)} cannot be loaded (changed or damaged since registered): promote or roll "
              "back to another version, and train again to replace it", file=sys.stderr)
    if lost:
        print(f"error: {lost}", file=sys.stderr)
    return 1 if lost or damaged or not set(aliases.values()) <= set(versions) else 0


def cmd_models_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print a model's manifest and decision policy as JSON."""
    record = ModelRegistry(settings.models_dir).load(args.version)
    print(json.dumps({"manifest": record.manifest, "policy": record.policy}, indent=2))
    return 0


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> int:
    """Make a version the production model (an evidence event when there is an evidence database)."""
    from fraud_service.bootstrap import optional_evidence
    from fraud_service.scoring import promotion

    if args.force and not args.reason:
        raise BadRequest("--force needs --reason TEXT: why the gate is overridden")
    with optional_evidence(settings) as uow:
        change = promotion.promote(ModelRegistry(settings.models_dir), uow, ref=args.version,
                                   reason=args.reason or "promoted with the CLI", actor=cli_actor(), force=args.force)
    if change.overridden:
        print(f"warning: promoted past the gate ({change.overridden}); recorded as evidence")
    print(f"{change.version} is now production (running services switch to it within seconds)")
    _shadow_note(change.shadow_ended)
    return 0


def _shadow_note(ended: str | None) -> None:
    """Say that the move ended ENDED's shadow (production is never its own shadow)."""
    if ended is not None:
        print(f"{ended} was the shadow model and is production now, so the shadow is off "
              "(`fraud-service models shadow V` starts another)")


def cmd_models_gate(args: argparse.Namespace, settings: Settings) -> int:
    """Judge a model's promotion gate against the production model on a window after both label cutoffs."""
    from training.trainset import Window
    from training.workflow import judge_gate

    if (args.start is None) != (args.end is None):
        raise BadRequest("give both --from and --to, or neither")
    window = Window(args.start, args.end) if args.start is not None else None
    gate = judge_gate(settings, args.version, window, progress(args))
    print(gate_summary(gate))
    return 0 if gate["passed"] else 1


def cmd_models_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Put back the previous production model (an evidence event when there is an evidence database)."""
    from fraud_service.bootstrap import optional_evidence
    from fraud_service.scoring import promotion

    with optional_evidence(settings) as uow:
        change = promotion.rollback(ModelRegistry(settings.models_dir), uow, reason="rolled back with the CLI",
                                    actor=cli_actor())
    print(f"production rolled back from {change.previous} to {change.version} (running services switch within "
          "5 seconds)")
    _shadow_note(change.shadow_ended)
    return 0


def cmd_models_restore_aliases(args: argparse.Namespace, settings: Settings) -> int:
    """Write the lost aliases file again, naming the production model (an evidence event when there is an evidence
    database)."""
    from fraud_service.bootstrap import optional_evidence
    from fraud_service.scoring import promotion

    with optional_evidence(settings) as uow:
        change = promotion.restore(ModelRegistry(settings.models_dir), uow, production=args.production,
                                   reason=args.reason, actor=cli_actor())
    print(f"restored the aliases: {change.version} is production, the newest version is candidate, no shadow "
          "(running services switch within 5 seconds)")
    return 0


def register(sub: Subparsers) -> None:
    """The registry commands."""
    models = sub.add_parser("models", help="the model registry: list, show, promote, gate, shadow, compare, rollback, "
                                              "restore-aliases",
                            description="Registered models (FRAUD_MODEL_DIR, default $FRAUD_HOME/models). V is a\n"
                                        "version (v0003 or 3), latest, production, candidate or shadow.",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="versions with aliases and test metrics").set_defaults(func=cmd_models_list)
    q = msub.add_parser("show", help="print a model's manifest and policy")
    q.add_argument("version", metavar="V", help="a version: v0003, 3, latest, production or candidate")
    q.set_defaults(func=cmd_models_show)
    q = msub.add_parser("promote", help="make V the production model, if it passed its gate",
                        description="Make V the production model. V must have passed its promotion gate against the\n"
                                    "model that is production now: an out-of-time comparison on a window after its\n"
                                    "label cutoff where its average precision and its policy's cost per return are\n"
                                    "not worse beyond the noise (`models gate V` judges it again). Otherwise this\n"
                                    "refuses and says why; --force --reason TEXT overrides, recorded as evidence.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("version", metavar="V", help="a version: v0003, 3, latest, production or candidate")
    q.add_argument("--reason", metavar="TEXT", help="why (recorded with the evidence event)")
    q.add_argument("--force", action="store_true", help="promote past a refusing gate (needs --reason)")
    q.set_defaults(func=cmd_models_promote)
    q = msub.add_parser("shadow", help="make V score every live request beside production (or --off)",
                        description="Point the registry's shadow alias at V: every running worker (within seconds)\n"
                                    "scores each live request with V as well, after answering it with production,\n"
                                    "and stores V's score and decision beside the assessment. Answers never\n"
                                    "change. --off stops it. Both are evidence events.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("version", metavar="V", nargs="?", help="a version to shadow (leave out with --off)")
    q.add_argument("--off", action="store_true", help="stop shadow scoring")
    q.add_argument("--reason", metavar="TEXT", help="why (recorded with the evidence event)")
    q.set_defaults(func=cmd_models_shadow)
    q = msub.add_parser("compare", help="production against the shadow model on live traffic",
                        description="For the assessments of [--from, --to) (default the last 30 days) that the\n"
                                    "shadow scored: agreement and the decision changes the shadow would have made;\n"
                                    "average precision and realised cost per return of both on the labels that\n"
                                    "have arrived (unlabelled returns count as legit); the money the change would\n"
                                    "move (refunds newly held, refunds newly paid at once).",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--from", dest="start", type=timestamp, metavar="DATE",
                   help="the first assessment time compared (default: 30 days before --to)")
    q.add_argument("--to", dest="end", type=timestamp, metavar="DATE", help="the end of the window (default: now)")
    q.add_argument("--model", metavar="V", help="only the assessments this shadow version scored")
    q.add_argument("--json", action="store_true", help="the figures as one JSON object")
    q.set_defaults(func=cmd_models_compare)
    q = msub.add_parser("gate", help="judge V against the production model out of time, and record it",
                        description="Score V and the production model (or, with none, the rules+history baseline) on\n"
                                    "the returns after both label cutoffs whose labels have matured, compare average\n"
                                    "precision and each policy's realised cost per return with the noise of the\n"
                                    "difference (paired bootstrap), and record the result as V's gate, which\n"
                                    "`models promote` reads. Exit code 0 when it passed, 1 when not.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("version", metavar="V", help="a version: v0003, 3, latest, production or candidate")
    q.add_argument("--from", dest="start", type=timestamp, metavar="DATE",
                   help="window start (default: the later label cutoff)")
    q.add_argument("--to", dest="end", type=timestamp, metavar="DATE",
                   help="window end (default: the last request minus the label delay)")
    q.set_defaults(func=cmd_models_gate)
    msub.add_parser("rollback", help="put back the production model the current one replaced").set_defaults(
        func=cmd_models_rollback)
    q = msub.add_parser("restore-aliases", help="after aliases.json was lost: name the production model again",
                        description="The registry's aliases.json (which version is production, candidate, shadow,\n"
                                    "and their history) went missing while versions are registered: nothing is\n"
                                    "served, promoted or registered until it is back. Put it back from a backup, or\n"
                                    "write it again with this: V becomes production (once it loads and scores), the\n"
                                    "newest version candidate, no shadow; the earlier history is gone. Refused\n"
                                    "while the file exists. An evidence event when there is an evidence database.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--production", required=True, metavar="V", help="the version to serve: v0003 or 3")
    q.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded with the evidence event)")
    q.set_defaults(func=cmd_models_restore_aliases)
