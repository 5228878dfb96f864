"""The model registry: versioned LightGBM models with manifests, decision policies and aliases.

Layout under the registry directory:

    versions/v0001/model.txt        LightGBM text model
    versions/v0001/manifest.json    version, features (ordered), training window, metrics, checksum, ...
    versions/v0001/policy-001.json  decision thresholds; a new file per revision, the highest is in force
    versions/v0001/gate-001.json    an out-of-time comparison with what it would replace; the latest counts
    versions/v0001/sample.json      the training sample's feature and score histograms (drift is measured on it)
    aliases.json                    {"production": "v0001", "candidate": "v0002", "history": [...]}

A version directory is written beside the others under a temporary name and renamed into place,
so a crash never leaves half a model; alias changes are written to a temporary file and renamed.
Writers hold an exclusive lock on `.lock`. Of the project, this module imports only the exception tree
(`fraud_service.errors`, which imports nothing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraud_service.errors import ModelNotFound, PromotionRefused, RegistryError

ALIASES = ("production", "candidate", "shadow")
FIRST_PRODUCTION = "first model: beat the rules baseline out of time"
"""Why a registry's first model became production as it was registered (`register`)."""
VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class ModelRecord:
    """A registered model version: its manifest, text model and the policy in force."""

    version: str
    path: Path
    manifest: dict[str, Any]
    policy: dict[str, Any]

    def model_text(self) -> str:
        return (self.path / "model.txt").read_text()


def checksum(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class ModelRegistry:
    """Versioned models in a directory (FRAUD_MODEL_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- reading ------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        folder = self.root / "versions"
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if VERSION.match(p.name)), key=_number)

    def aliases(self) -> dict[str, str]:
        """Alias -> version (only the aliases that are set)."""
        state = self._state()
        return {alias: state[alias] for alias in ALIASES if state.get(alias)}

    def history(self) -> list[dict[str, Any]]:
        """Every alias change, oldest first."""
        return list(self._state().get("history", []))

    def stamp(self, version: str) -> tuple[tuple[str, int, int, int], ...]:
        """What changes when VERSION's files or the aliases file are written again (name, inode, size, modification
        time of each): a watcher that failed to load a version tries again once one of them changed (the files
        mended, or the version promoted again), not every second."""
        paths = [self.root / "aliases.json", *sorted((self.root / "versions" / version).glob("*"))]
        stats = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            stats.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stats)

    def resolve(self, ref: str) -> str:
        """A version from `v0003`, `3`, `latest`, `production` or `candidate`."""
        versions = self.versions()
        if ref in ALIASES:
            version = self.aliases().get(ref)
            if version is None:
                waiting = self.aliases().get("candidate") if ref == "production" else None
                raise ModelNotFound(f"no model is {ref} yet: " + (
                    f"{waiting} is the candidate, not promoted (`fraud-service models gate {waiting}` says why); "
                    f"`fraud-service models promote {waiting}` promotes it if it passes, `--force --reason TEXT` if "
                    "not, or train another with `fraud-service train`" if waiting
                    else "train one with `fraud-service train`"))
            return version
        if ref == "latest":
            if not versions:
                raise ModelNotFound("the model registry is empty: train one with `fraud-service train`")
            return versions[-1]
        version = f"v{int(ref):04d}" if ref.isascii() and ref.isdigit() else ref
        if version not in versions:
            known = ", ".join(versions) or "none"
            raise ModelNotFound(f"no model version {ref!r} (registered: {known}; "
                                "or use latest, production, candidate)")
        return version

    def load(self, ref: str, expected_features: Sequence[str] | None = None) -> ModelRecord:
        """The model for REF, after checking its checksum and, if given, that its features are known.

        `expected_features` are the features the running feature service provides: a model that
        needs one it does not provide, or lists them in a different order than it was trained
        with, is refused.
        """
        version = self.resolve(ref)
        path = self.root / "versions" / version
        _check_seal(path, version)
        manifest = _read_json(path / "manifest.json", version)
        text = (path / "model.txt").read_text()
        if checksum(text) != manifest.get("checksum"):
            raise RegistryError(f"model {version}: model.txt does not match the checksum in its manifest "
                                f"({manifest.get('checksum')}); the file was changed or damaged")
        if expected_features is not None:
            missing = [f for f in manifest["features"] if f not in set(expected_features)]
            if missing:
                raise RegistryError(f"model {version} needs feature(s) the feature service does not provide: "
                                    f"{', '.join(missing)} (service {manifest.get('feature_service')})")
        record = ModelRecord(version, path, manifest, self._policy(path))
        return record

    def find(self, model_checksum: str, **manifest: Any) -> ModelRecord | None:
        """The newest version whose model has MODEL_CHECKSUM and whose manifest holds the given MANIFEST values."""
        for version in reversed(self.versions()):
            found = self.manifest(version)
            if found.get("checksum") == model_checksum and all(found.get(k) == v for k, v in manifest.items()):
                return self.load(version)
        return None

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of VERSION (no checksum check: for reading what a stored assessment was scored with)."""
        path = self.root / "versions" / version / "manifest.json"
        if not path.exists():
            raise ModelNotFound(f"no model version {version!r}")
        return _read_json(path, version)

    def production_history(self) -> list[str]:
        """Every version `production` has named, the current one first, then back through its moves (once each):
        where to fall back to when the current one cannot be served. A version whose latest move was a rollback
        away from it was withdrawn, and is left out: a damaged production model brought back one rolled back."""
        state = self._state()
        seen = [state["production"]] if state.get("production") else []
        decided = set(seen)
        for move in reversed(state.get("history", [])):
            if move.get("alias") != "production":
                continue
            for version, withdrawn in ((move.get("to"), False), (move.get("from"), bool(move.get("rollback")))):
                if version and version not in decided:
                    decided.add(version)
                    if not withdrawn:
                        seen.append(version)
        return seen

    def gate(self, ref: str) -> dict[str, Any] | None:
        """The latest promotion gate judged for REF (`training/gate.py`), or None when it was never judged."""
        version = self.resolve(ref)
        files = sorted((self.root / "versions" / version).glob("gate-*.json"))
        return _read_json(files[-1], version) if files else None

    def extra(self, ref: str, name: str) -> dict[str, Any] | None:
        """A JSON file registered with REF (e.g. `sample.json`, the training sample's distributions), or None."""
        version = self.resolve(ref)
        path = self.root / "versions" / version / name
        return _read_json(path, version) if path.is_file() and path.name.endswith(".json") else None

    def _policy(self, path: Path) -> dict[str, Any]:
        files = sorted(path.glob("policy-*.json"))
        return _read_json(files[-1], path.name) if files else {}

    # --- writing ------------------------------------------------------------------------------
    def register(self, model_text: str, manifest: dict[str, Any], policy: dict[str, Any], *,
                 gate: dict[str, Any] | None = None, extra: dict[str, dict[str, Any]] | None = None,
                 first_production: bool = False) -> ModelRecord:
        """Store a new version with its first policy, its GATE and EXTRA files (name -> JSON object); it becomes
        `candidate`, and `production` only when FIRST_PRODUCTION and there is none yet (the caller decided that it
        passed the gate against the rules baseline)."""
        with self._lock():
            state = self._state()  # a registry that lost its aliases file takes no version: it cannot tell production
            versions = self.versions()
            version = f"v{(_number(versions[-1]) + 1 if versions else 1):04d}"
            folder = self.root / "versions"
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
            try:
                full = {**manifest, "version": version, "checksum": checksum(model_text),
                        "registered_at": _now()}
                (staging / "model.txt").write_text(model_text)
                (staging / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True))
                numbered = {**policy, "version": f"{version}.p1"}
                (staging / "policy-001.json").write_text(json.dumps(numbered, indent=2, sort_keys=True))
                files = {**(extra or {}), **({"gate-001.json": gate} if gate is not None else {})}
                for name, data in files.items():
                    (staging / name).write_text(json.dumps(data, indent=2, sort_keys=True))
                _write_seal(staging)
                os.rename(staging, folder / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            state.setdefault("sealed_from", version)  # every version from this one on has a seal (`_check_seal`)
            self._set(state, "candidate", version, "registered")
            if first_production and not state.get("production"):
                self._set(state, "production", version, FIRST_PRODUCTION)
            self._write_state(state)
        return self.load(version)

    def add_policy(self, ref: str, policy: dict[str, Any]) -> dict[str, Any]:
        """A new revision of a model's decision policy; returns it with its version (`v0003.p2`)."""
        return self._add_revision(ref, "policy", lambda version, n: {**policy, "version": f"{version}.p{n}"})

    def add_gate(self, ref: str, gate: dict[str, Any]) -> dict[str, Any]:
        """A new promotion gate judged for REF; the latest one is what promotion reads."""
        return self._add_revision(ref, "gate", lambda version, n: {**gate, "revision": n})

    def _add_revision(self, ref: str, kind: str, make: Callable[[str, int], dict[str, Any]]) -> dict[str, Any]:
        with self._lock():
            version = self.resolve(ref)
            path = self.root / "versions" / version
            revision = len(list(path.glob(f"{kind}-*.json"))) + 1
            numbered: dict[str, Any] = make(version, revision)
            _check_seal(path, version)  # a new revision is sealed with the files it joins, not over an edit
            _add_sealed(path, f"{kind}-{revision:03d}.json", json.dumps(numbered, indent=2, sort_keys=True))
        return numbered

    def promote(self, ref: str, reason: str = "promoted") -> str:
        """Make REF the production model; returns its version."""
        with self._lock():
            version = self.resolve(ref)
            self.load(version)  # refuses a damaged model before it goes live
            state = self._state()
            if state.get("production") == version:
                raise PromotionRefused(f"{version} is already production")
            self._set(state, "production", version, reason)
            self._end_shadow_of(state, version, f"promoted to production: {reason}")
            self._write_state(state)
        return version

    def set_shadow(self, ref: str | None, reason: str) -> tuple[str | None, str | None]:
        """Make REF the shadow model (None: no shadow); returns (previous, now)."""
        with self._lock():
            version = None if ref is None else self.resolve(ref)
            if version is not None:
                self.load(version)  # refuses a damaged model
            state = self._state()
            previous = state.get("shadow")
            if version is not None and version == state.get("production"):
                raise PromotionRefused(f"{version} is the production model: a shadow is another model to compare "
                                       "with it")
            if version is None:
                if previous is None:
                    raise PromotionRefused("there is no shadow model to turn off")
                state.setdefault("history", []).append({"alias": "shadow", "from": previous, "to": None,
                                                        "at": _now(), "reason": reason, "rollback": False})
                state.pop("shadow", None)
            else:
                if previous == version:
                    raise PromotionRefused(f"{version} is already the shadow model")
                self._set(state, "shadow", version, reason)
            self._write_state(state)
        return previous, version

    def rollback(self) -> tuple[str, str]:
        """Put back the production model that the current one replaced; returns (from, to).

        Successive rollbacks walk back through the promotions, not to and fro.
        """
        with self._lock():
            state = self._state()
            current = state.get("production")
            replaced = [h["from"] for h in state.get("history", [])
                        if h["alias"] == "production" and h["to"] == current and not h.get("rollback")]
            if current is not None and current not in self.versions():
                raise PromotionRefused(f"production names {current}, which is not a registered version (aliases.json "
                                       "edited by hand?); a rollback cannot tell what it replaced: name the model to "
                                       "serve with `fraud-service models promote V --force --reason ...`")
            if current is None or not replaced or replaced[-1] is None:
                raise PromotionRefused("there is no earlier production model to roll back to "
                                       f"(production is {current})")
            target = str(replaced[-1])
            self.load(target)
            self._set(state, "production", target, f"rollback from {current}", rollback=True)
            self._end_shadow_of(state, target, f"rolled back to production from {current}")
            self._write_state(state)
        return str(current), target

    def restore_aliases(self, production: str, reason: str) -> str:
        """Write the aliases file again after it went missing: PRODUCTION (a version) is production, the newest
        version is candidate, no shadow; the history starts with a note that it was restored. Returns the version.
        Refused while the file exists (promote and rollback move the aliases of a registry that has one)."""
        with self._lock():
            path = self.root / "aliases.json"
            if path.exists():
                raise PromotionRefused(f"{path} exists: there is nothing to restore (`fraud-service models promote` "
                                       "and `rollback` move the aliases)")
            versions = self.versions()
            version = f"v{int(production):04d}" if production.isascii() and production.isdigit() else production
            if version not in versions:
                raise ModelNotFound(f"no model version {production!r} (registered: {', '.join(versions) or 'none'})")
            self.load(version)  # refuses a damaged model before it goes live
            state: dict[str, Any] = {"history": []}
            sealed = [v for v in versions if (self.root / "versions" / v / SEAL).exists()]
            if sealed:  # the record of when sealing began went with the file: the oldest sealed version tells
                state["sealed_from"] = sealed[0]
            note = f"{path.name} was missing; restored: {reason}"
            self._set(state, "candidate", versions[-1], note)
            self._set(state, "production", version, note)
            self._write_state(state)
        return version

    def forget_restore(self, version: str) -> None:
        """Undo `restore_aliases` of VERSION (its evidence could not be written): the aliases file goes again,
        unless it has changed since."""
        with self._lock():
            state = self._state()
            moves = [(m.get("alias"), m.get("from"), m.get("to")) for m in state.get("history", [])]
            if state.get("production") == version and len(moves) == 2 and moves[1] == ("production", None, version):
                (self.root / "aliases.json").unlink()

    def put_back(self, previous: str | None, version: str) -> None:
        """Undo the last move of `production` from PREVIOUS to VERSION (its evidence could not be written): the
        alias and its history are as before it, unless the alias has moved again since."""
        with self._lock():
            state = self._state()
            history = state.get("history", [])
            ended = len(history) > 1 and history[-1].get("alias") == "shadow" and (
                history[-1].get("from"), history[-1].get("to")) == (version, None) and not state.get("shadow")
            last = history[-2 if ended else -1] if history else {}
            if state.get("production") != version or (last.get("alias"), last.get("from"), last.get("to")) != (
                    "production", previous, version):
                return
            if ended:  # the move ended VERSION's shadow (`_end_shadow_of`): it is the shadow again
                history.pop()
                state["shadow"] = version
            history.pop()
            if previous is None:
                state.pop("production", None)
            else:
                state["production"] = previous
            self._write_state(state)

    # --- internals ----------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _state(self) -> dict[str, Any]:
        """aliases.json, checked: RegistryError naming what is wrong when it is damaged or edited into a shape the
        registry never writes (an alias that is not a version name, such as a path, is never followed)."""
        path = self.root / "aliases.json"
        if not path.exists():
            versions = self.versions()
            if versions:  # not a new registry: which version is production is lost, and is never guessed
                raise RegistryError(
                    f"{path} is missing, but {len(versions)} version(s) are registered ({_span(versions)}): which one "
                    "is production is not known, so none is served, promoted or registered on a guess. Put the file "
                    "back from a backup, or name the production model again: `fraud-service models restore-aliases "
                    "--production V --reason TEXT` (the evidence log's model_promoted and model_rolled_back events "
                    "name the last production moves)")
            return {"history": []}
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{path} cannot be read as JSON ({exc}); restore it from a backup") from None
        if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
            raise RegistryError(f"{path} is not an object with a list of alias changes; restore it from a backup")
        for alias in ALIASES:
            value = state.get(alias)
            if value is not None and not (isinstance(value, str) and VERSION.fullmatch(value)):
                raise RegistryError(f"{path}: {alias} is {value!r}, not a version such as v0003; restore it from a "
                                    "backup")
        for i, move in enumerate(state.get("history", [])):  # its versions are fallen back to, so loaded by name
            if not isinstance(move, dict) or move.get("alias") not in ALIASES or not all(
                    end in move and (move[end] is None or (isinstance(move[end], str) and VERSION.fullmatch(move[end])))
                    for end in ("from", "to")):
                raise RegistryError(f"{path}: history[{i}] is {json.dumps(move)[:200]}, not an alias change "
                                    "(alias, from and to versions); restore it from a backup")
        return state

    def _set(self, state: dict[str, Any], alias: str, version: str, reason: str, rollback: bool = False) -> None:
        state.setdefault("history", []).append({"alias": alias, "from": state.get(alias), "to": version,
                                                "at": _now(), "reason": reason, "rollback": rollback})
        state[alias] = version

    def _end_shadow_of(self, state: dict[str, Any], version: str, reason: str) -> None:
        """Production is never its own shadow: VERSION, becoming production, stops being the shadow (a history entry
        says why; the move's caller reports it)."""
        if state.get("shadow") == version:
            state.setdefault("history", []).append({"alias": "shadow", "from": version, "to": None, "at": _now(),
                                                    "reason": reason, "rollback": False})
            state.pop("shadow")

    def _write_state(self, state: dict[str, Any]) -> None:
        _atomic_write(self.root / "aliases.json", json.dumps(state, indent=2, sort_keys=True))


SEAL = "seal.json"
"""Each version's SHA-256 of every file it holds (model, manifest with its calibration, every policy)."""


def _sealed_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name != SEAL and not p.name.startswith("."))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _seal_of(path: Path) -> dict[str, str]:
    """The seal of the version at PATH as its files are now."""
    return {p.name: _digest(p.read_bytes()) for p in _sealed_files(path)}


def _write_seal(path: Path) -> None:
    _atomic_write(path / SEAL, json.dumps(_seal_of(path), indent=2, sort_keys=True))


def _add_sealed(path: Path, name: str, text: str) -> None:
    """Add file NAME holding TEXT to the version at PATH together with the seal naming it, all or nothing: both are
    written in full under hidden names first, then renamed into place, the seal last. A full disk or any other error
    leaves the version as it was (a new policy left unsealed beside the old seal made the version unloadable: a
    helper's probe filled the disk during `thresholds`)."""
    staged, sealing, target = path / f".{name}.tmp", path / f".{SEAL}.tmp", path / name
    seal = _seal_of(path) | {name: _digest(text.encode())}
    placed = False
    try:
        staged.write_text(text)
        sealing.write_text(json.dumps(seal, indent=2, sort_keys=True))
        os.replace(staged, target)
        placed = True
        os.replace(sealing, path / SEAL)
    except BaseException:
        for leftover in (staged, sealing, *([target] if placed else [])):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise


def _check_seal(path: Path, version: str) -> None:
    """RegistryError naming the first file of VERSION that was changed, added or removed since it was sealed.
    A version registered before seals existed (no seal.json, and neither an older version with one nor an earlier
    first sealed version in aliases.json's `sealed_from`) is checked by its model checksum only: deleting a seal.json
    turned the check off (a helper's probe)."""
    seal_path = path / SEAL
    if not seal_path.exists():
        sealed = [p.parent.name for p in path.parent.glob(f"*/{SEAL}") if VERSION.match(p.parent.name)]
        with contextlib.suppress(OSError, ValueError, AttributeError):  # the aliases' own checks say what is wrong
            marked = json.loads((path.parent.parent / "aliases.json").read_text()).get("sealed_from")
            sealed += [marked] if isinstance(marked, str) and VERSION.match(marked) else []
        first = min(sealed, key=_number, default=None)
        if first is not None and _number(version) >= _number(first):
            raise RegistryError(f"model {version}: {SEAL} is missing (every version from {first} on is sealed when "
                                "registered); the version was changed or damaged")
        return
    seal = _read_json(seal_path, version)
    present = {p.name: p for p in _sealed_files(path)}
    for name in sorted(set(seal) | set(present)):
        if name not in present:
            raise RegistryError(f"model {version}: {name} is missing (it was sealed with the model)")
        if name not in seal:
            raise RegistryError(f"model {version}: {name} was added after the model was sealed")
        if _digest(present[name].read_bytes()) != seal[name]:
            raise RegistryError(f"model {version}: {name} does not match its seal; the file was changed or damaged")


def _read_json(path: Path, version: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"model {version}: {path.name} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"model {version}: {path.name} is not a JSON object")
    return data


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a part-written copy is not left behind
        raise


def _span(versions: list[str]) -> str:
    """`v0001` or `v0001 to v0007`."""
    return versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"


def _number(version: str) -> int:
    match = VERSION.match(version)
    assert match is not None
    return int(match.group(1))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
