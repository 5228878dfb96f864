"""The model registry: versions, aliases, checks on load, promotion and rollback (files only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fraud_service.errors import RegistryError
from models.registry import ModelRegistry

FEATURES = ["a", "b", "c"]


def _register(registry: ModelRegistry, text: str = "tree model", features: list[str] = FEATURES, first: bool = True):
    return registry.register(text, {"features": features, "feature_service": "svc"}, {"review_from": 0.5},
                             first_production=first)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_the_first_model_becomes_candidate_and_production(registry):
    record = _register(registry)
    assert record.version == "v0001"
    assert registry.aliases() == {"production": "v0001", "candidate": "v0001"}
    assert record.policy["version"] == "v0001.p1"
    assert record.manifest["checksum"].startswith("sha256:")


def test_a_model_the_trainer_did_not_pass_is_only_candidate_even_in_an_empty_registry(registry):
    record = _register(registry, first=False)
    assert registry.aliases() == {"candidate": "v0001"}
    assert registry.gate("v0001") is None
    assert registry.history()[-1]["alias"] == "candidate"
    assert record.version == "v0001"


def test_gates_are_kept_sealed_beside_the_model_and_the_latest_counts(registry):
    record = registry.register("tree", {"features": FEATURES}, {"review_from": 0.5}, gate={"passed": False})
    assert registry.gate("v0001") == {"passed": False}
    assert registry.add_gate("v0001", {"passed": True, "against": "rules+history"})["revision"] == 2
    assert registry.gate("v0001") == {"passed": True, "against": "rules+history", "revision": 2}
    assert registry.load("v0001").version == "v0001"  # the new gate file was sealed with the rest
    (record.path / "gate-002.json").write_text(json.dumps({"passed": True, "against": "v0009"}))
    with pytest.raises(RegistryError, match="gate-002.json does not match its seal"):
        registry.load("v0001")


def test_find_names_the_newest_version_with_the_same_model_text_and_manifest_values(registry):
    _register(registry, "same")
    registry.register("same", {"features": FEATURES, "label_cutoff": "x"}, {"review_from": 0.5})
    registry.register("other", {"features": FEATURES, "label_cutoff": "x"}, {"review_from": 0.5})
    from models.registry import checksum
    assert registry.find(checksum("same")).version == "v0002"
    assert registry.find(checksum("same"), label_cutoff="x").version == "v0002"
    assert registry.find(checksum("same"), label_cutoff="y") is None
    assert registry.find(checksum("never")) is None


def test_a_later_model_is_only_candidate_until_promoted(registry):
    _register(registry)
    _register(registry, "second")
    assert registry.aliases() == {"production": "v0001", "candidate": "v0002"}
    assert registry.promote("candidate") == "v0002"
    assert registry.aliases()["production"] == "v0002"


def test_versions_resolve_by_name_number_alias_and_latest(registry):
    for text in ("one", "two", "three"):
        _register(registry, text)
    assert registry.resolve("v0002") == "v0002"
    assert registry.resolve("2") == "v0002"
    assert registry.resolve("latest") == "v0003"
    assert registry.resolve("production") == "v0001"
    assert registry.load("latest").model_text() == "three"
    for digits in ("²", "1²", "١"):  # str.isdigit() holds for these; int() takes none or reads another number
        with pytest.raises(RegistryError, match="no model version"):
            registry.resolve(digits)


def test_an_unknown_version_names_the_registered_ones(registry):
    _register(registry)
    with pytest.raises(RegistryError, match=r"no model version 'v0009'.*registered: v0001"):
        registry.load("v0009")


def test_an_empty_registry_says_how_to_fill_it(registry):
    with pytest.raises(RegistryError, match="no model is production yet.*fraud-service train"):
        registry.load("production")
    with pytest.raises(RegistryError, match="is empty"):
        registry.load("latest")


def test_no_production_beside_a_candidate_says_how_to_promote_it(registry):
    """A data scientist whose first model failed its gate (`doctor` after ingest, build, train, score-batch) was told
    to train one, though one was there."""
    _register(registry, first=False)
    with pytest.raises(RegistryError, match=r"no model is production yet: v0001 is the candidate.*models gate v0001"
                                            r".*models promote v0001.*--force --reason"):
        registry.load("production")


def test_a_changed_model_file_is_refused(registry):
    record = _register(registry)
    (record.path / "model.txt").write_text("tree model, edited")
    with pytest.raises(RegistryError, match="model.txt does not match its seal"):
        registry.load("v0001")
    (record.path / "seal.json").unlink()  # the only version's seal deleted: refused, the registry seals them all
    with pytest.raises(RegistryError, match="seal.json is missing"):
        registry.load("v0001")
    _from_before_seals(registry)  # a version registered before seals: its model checksum still holds
    with pytest.raises(RegistryError, match="model.txt does not match the checksum"):
        registry.load("v0001")


def _from_before_seals(registry: ModelRegistry) -> None:
    """The registry as code from before seals left it: no seal.json, and no record of when sealing began."""
    import json

    for seal in (registry.root / "versions").glob("*/seal.json"):
        seal.unlink()
    state = json.loads((registry.root / "aliases.json").read_text())
    state.pop("sealed_from")
    (registry.root / "aliases.json").write_text(json.dumps(state))


def test_a_model_needing_a_feature_the_service_lacks_is_refused(registry):
    _register(registry, features=["a", "z"])
    with pytest.raises(RegistryError, match="needs feature\\(s\\) the feature service does not provide: z"):
        registry.load("v0001", expected_features=FEATURES)
    assert registry.load("v0001", expected_features=["a", "z", "q"]).version == "v0001"


def test_promoting_a_damaged_model_is_refused_and_production_stays(registry):
    _register(registry)
    second = _register(registry, "second")
    (second.path / "model.txt").write_text("garbage")
    with pytest.raises(RegistryError, match="model.txt does not match"):
        registry.promote("v0002")
    assert registry.aliases()["production"] == "v0001"


def test_promoting_the_production_model_again_is_an_error(registry):
    _register(registry)
    with pytest.raises(RegistryError, match="already production"):
        registry.promote("v0001")


def test_rollback_walks_back_through_promotions(registry):
    for text in ("one", "two", "three"):
        _register(registry, text)
    registry.promote("v0002")
    registry.promote("v0003")
    assert registry.rollback() == ("v0003", "v0002")
    assert registry.rollback() == ("v0002", "v0001")
    with pytest.raises(RegistryError, match="no earlier production model"):
        registry.rollback()
    assert registry.aliases()["production"] == "v0001"
    kinds = [(h["alias"], h["from"], h["to"], h["rollback"]) for h in registry.history() if h["alias"] == "production"]
    assert kinds == [("production", None, "v0001", False), ("production", "v0001", "v0002", False),
                     ("production", "v0002", "v0003", False), ("production", "v0003", "v0002", True),
                     ("production", "v0002", "v0001", True)]


def test_a_rollback_from_a_version_that_is_not_registered_says_so(registry):
    """Production pointed by hand at a missing version: the rollback said there was no earlier model, though the
    history held promotions."""
    import json

    for text in ("one", "two"):
        _register(registry, text)
    registry.promote("v0002")
    state = json.loads((registry.root / "aliases.json").read_text())
    (registry.root / "aliases.json").write_text(json.dumps({**state, "production": "v0009"}))
    with pytest.raises(RegistryError, match=r"production names v0009, which is not a registered version .*"
                                            r"models promote V --force"):
        registry.rollback()


def test_a_new_policy_revision_is_in_force_and_the_old_one_kept(registry):
    _register(registry)
    policy = registry.add_policy("production", {"review_from": 0.7})
    assert policy["version"] == "v0001.p2"
    assert registry.load("v0001").policy == {"review_from": 0.7, "version": "v0001.p2"}
    first = json.loads((registry.root / "versions" / "v0001" / "policy-001.json").read_text())
    assert first == {"review_from": 0.5, "version": "v0001.p1"}


def test_a_failed_registration_leaves_no_version_behind(registry, monkeypatch):
    _register(registry)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("models.registry.os.rename", fail)
    with pytest.raises(OSError, match="disk full"):
        _register(registry, "second")
    assert registry.versions() == ["v0001"]
    assert [p.name for p in (registry.root / "versions").iterdir()] == ["v0001"]
    assert registry.aliases() == {"production": "v0001", "candidate": "v0001"}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("manifest.json", '{"features": ["a"], "calibration": {"slope": 0}}', "manifest.json does not match its seal"),
    ("policy-001.json", '{"review_from": 0.0}', "policy-001.json does not match its seal"),
    ("policy-002.json", '{"review_from": 0.0}', "policy-002.json was added after the model was sealed"),
])
def test_every_file_of_a_version_is_sealed(registry, name, content, message):
    record = _register(registry)
    (record.path / name).write_text(content)
    with pytest.raises(RegistryError, match=message):
        registry.load("v0001")


def test_a_new_policy_revision_is_sealed_with_the_files_it_joins(registry):
    _register(registry)
    assert registry.add_policy("v0001", {"review_from": 0.4})["version"] == "v0001.p2"
    assert registry.load("v0001").policy["review_from"] == 0.4
    (registry.root / "versions" / "v0001" / "policy-001.json").write_text("{}")
    with pytest.raises(RegistryError, match="policy-001.json does not match its seal"):
        registry.add_policy("v0001", {"review_from": 0.3})  # not sealed over an edit


@pytest.mark.parametrize("fails", ["the seal's write", "the seal's rename"])
def test_a_policy_revision_that_fails_to_be_written_leaves_the_version_as_it_was(registry, monkeypatch, fails):
    """A full disk during `thresholds` left policy-002.json beside the old seal: "added after the model was sealed",
    the version unloadable, the only production model gone at the next restart (a helper's probe)."""
    import errno
    from pathlib import Path

    record = _register(registry)
    before = sorted(p.name for p in record.path.iterdir())
    real_write, real_replace = Path.write_text, os.replace

    def write_text(self, *args, **kwargs):
        if fails == "the seal's write" and self.name.startswith(".seal.json"):
            real_write(self, "{", *args[1:], **kwargs)  # part of it written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    def replace(source, target):
        if fails == "the seal's rename" and Path(target).name == "seal.json":
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr("models.registry.os.replace", replace)
    with pytest.raises(OSError):
        registry.add_policy("v0001", {"review_from": 0.4})
    monkeypatch.undo()

    assert sorted(p.name for p in record.path.iterdir()) == before  # nothing half-written, hidden or not
    assert registry.load("v0001").policy == {"review_from": 0.5, "version": "v0001.p1"}
    assert registry.add_policy("v0001", {"review_from": 0.4})["version"] == "v0001.p2"  # and it can be done again
    assert registry.load("v0001").policy["review_from"] == 0.4


def test_a_manifest_that_is_not_json_is_a_registry_error(registry):
    record = _register(registry)
    _from_before_seals(registry)
    (record.path / "manifest.json").write_text("{not json")
    with pytest.raises(RegistryError, match="manifest.json cannot be read as JSON"):
        registry.load("v0001")
    with pytest.raises(RegistryError, match="manifest.json cannot be read as JSON"):
        registry.manifest("v0001")


def test_production_history_lists_every_version_production_named_newest_first(registry):
    for text in ("one", "two", "three"):
        _register(registry, text)
    registry.promote("v0003")
    registry.promote("v0002")
    assert registry.production_history() == ["v0002", "v0003", "v0001"]
    # a version rolled back from was withdrawn: the boot's fallback brought it back when production was damaged
    registry.rollback()  # v0002 -> v0003
    assert registry.production_history() == ["v0003", "v0001"]
    registry.promote("v0002")  # promoted again: a fallback once more
    assert registry.production_history() == ["v0002", "v0003", "v0001"]


def test_promoting_the_shadow_model_ends_its_shadow(registry):
    _register(registry)
    _register(registry, "second")
    assert registry.set_shadow("v0002", "try it") == (None, "v0002")
    registry.promote("v0002", "it did better")
    assert registry.aliases() == {"production": "v0002", "candidate": "v0002"}
    assert registry.history()[-1]["alias"] == "shadow" and registry.history()[-1]["to"] is None


@pytest.mark.parametrize(("content", "message"), [
    ("{", "aliases.json cannot be read as JSON"),
    ('{"production": 5, "history": []}', "production is 5, not a version such as v0003"),
    ('{"production": "../../../etc", "history": []}', "production is '../../../etc', not a version"),
    ('{"history": {}}', "not an object with a list of alias changes"),
    ("[]", "not an object with a list of alias changes"),
    ('{"history": [5]}', r"history\[0\] is 5, not an alias change"),
    ('{"history": [{"alias": "production", "from": null, "to": "../../x"}]}', r"history\[0\] is .*\.\./\.\./x"),
    ('{"history": [{"alias": "boss", "from": null, "to": "v0001"}]}', r"history\[0\] is .*boss"),
    ('{"history": [{"alias": "production"}]}', r"history\[0\] is .*not an alias change"),
])
def test_a_damaged_or_edited_aliases_file_is_a_registry_error_naming_it(registry, content, message):
    """A truncated aliases.json was a JSONDecodeError traceback, a number a TypeError, and a path was followed."""
    _register(registry)
    (registry.root / "aliases.json").write_text(content)
    for read in (registry.aliases, lambda: registry.resolve("production"), registry.history):
        with pytest.raises(RegistryError, match=message):
            read()


def test_rolling_back_to_the_shadow_model_ends_its_shadow(registry):
    """A rollback to the version that was the shadow left production and shadow naming the same model."""
    _register(registry)
    _register(registry, "second")
    registry.promote("v0002")
    registry.set_shadow("v0001", "compare the old one on live traffic")
    assert registry.rollback() == ("v0002", "v0001")
    assert registry.aliases() == {"production": "v0001", "candidate": "v0002"}
    last = registry.history()[-1]
    assert (last["alias"], last["from"], last["to"]) == ("shadow", "v0001", None)
    assert last["reason"] == "rolled back to production from v0002"


def test_the_production_model_cannot_be_made_its_own_shadow(registry):
    _register(registry)
    with pytest.raises(RegistryError, match="v0001 is the production model: a shadow is another model"):
        registry.set_shadow("production", "mirror")
    assert registry.aliases() == {"production": "v0001", "candidate": "v0001"}


@pytest.mark.parametrize("move", ["promote", "rollback"])
def test_putting_back_a_move_that_ended_a_shadow_makes_it_the_shadow_again(registry, move):
    """The promotion of the shadow model whose evidence could not be written stayed production: `put_back` looked
    for the production move as the last history entry, and found the shadow's end after it."""
    _register(registry)
    _register(registry, "second")
    if move == "promote":
        registry.set_shadow("v0002", "try it")
        previous, version = "v0001", registry.promote("v0002")
    else:
        registry.promote("v0002")
        registry.set_shadow("v0001", "compare")
        previous, version = registry.rollback()
    before = registry.history()[:-2]
    registry.put_back(previous, version)
    assert registry.aliases() == {"production": previous, "candidate": "v0002", "shadow": version}
    assert registry.history() == before


def test_a_registry_that_lost_its_aliases_file_registers_nothing_and_says_how_to_repair(registry):
    """With aliases.json gone, the next registration found "no production" and made itself production silently."""
    _register(registry)
    _register(registry, "second")
    (registry.root / "aliases.json").unlink()
    message = (r"aliases.json is missing, but 2 version\(s\) are registered \(v0001 to v0002\): which one is "
               r"production is not known.*models restore-aliases --production V --reason TEXT")
    with pytest.raises(RegistryError, match=message):
        _register(registry, "third")
    for read in (registry.aliases, registry.production_history, lambda: registry.resolve("production")):
        with pytest.raises(RegistryError, match=message):
            read()
    assert registry.versions() == ["v0001", "v0002"]
    assert not (registry.root / "aliases.json").exists()


def test_restoring_the_aliases_names_production_again_only_when_the_file_is_missing(registry):
    _register(registry)
    _register(registry, "second")
    with pytest.raises(RegistryError, match="aliases.json exists: there is nothing to restore"):
        registry.restore_aliases("v0001", "lost")
    (registry.root / "aliases.json").unlink()
    with pytest.raises(RegistryError, match=r"no model version 'v0009' \(registered: v0001, v0002\)"):
        registry.restore_aliases("v0009", "lost")
    assert registry.restore_aliases("1", "deleted by a cleanup script") == "v0001"
    assert registry.aliases() == {"production": "v0001", "candidate": "v0002"}
    (registry.root / "versions" / "v0001" / "seal.json").unlink()  # sealing began with v0001: still refused
    with pytest.raises(RegistryError, match="seal.json is missing"):
        registry.load("v0001")
    assert [(h["alias"], h["from"], h["to"], h["reason"]) for h in registry.history()] == [
        ("candidate", None, "v0002", "aliases.json was missing; restored: deleted by a cleanup script"),
        ("production", None, "v0001", "aliases.json was missing; restored: deleted by a cleanup script")]
    assert _register(registry, "third").version == "v0003"
    assert registry.aliases() == {"production": "v0001", "candidate": "v0003"}


def test_a_restore_whose_evidence_cannot_be_written_leaves_the_file_missing_again(registry):
    _register(registry)
    (registry.root / "aliases.json").unlink()
    registry.restore_aliases("v0001", "lost")
    registry.forget_restore("v0001")
    assert not (registry.root / "aliases.json").exists()
    with pytest.raises(RegistryError, match="aliases.json is missing"):
        registry.aliases()
