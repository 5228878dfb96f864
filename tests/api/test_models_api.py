"""The model registry over HTTP: analysts read, only admins promote or roll back; every worker follows the
production alias without a restart, and a model that cannot be loaded never replaces the one serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fraud_service import bootstrap
from fraud_service.config import Settings
from fraud_service.errors import RegistryError
from fraud_service.store.schema import EvidenceEvent
from models.registry import ModelRegistry
from tests.api.conftest import Api, make_api, private_home
from tests.conftest import TrainedWorld

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def two_models(serving_home: Path, trained_world: TrainedWorld, tmp_path: Path) -> Iterator[tuple[Api, Settings]]:
    """A service on a private home whose registry holds v0001 (production) and v0002 (same model, new policy)."""
    home = private_home(serving_home, tmp_path / "home")
    settings = Settings.from_env({"FRAUD_HOME": str(home), "FRAUD_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"})
    registry = ModelRegistry(settings.models_dir)
    record = registry.load("production")
    registry.register(record.model_text(), {**record.manifest, "note": "retrained"},
                      {**record.policy, "inspect_from": 0.0, "credit_from": 0.0, "review_from": 0.0,
                       "deny_from": 1.0}, gate={"against": "v0001", "passed": True})
    api = make_api(settings, trained_world.dataset, "sqlite")
    yield api, settings
    api.service.close()


def test_only_admins_change_the_production_model(two_models: tuple[Api, Settings]) -> None:
    api, _ = two_models
    listed = api.client.get("/v1/models", headers=api.headers("analyst")).get_json()
    assert [v["version"] for v in listed["versions"]] == ["v0001", "v0002"]
    assert listed["aliases"]["production"] == "v0001" and listed["serving"] == "v0001"
    assert api.client.get("/v1/models", headers=api.headers("scoring")).status_code == 403
    for role in ("scoring", "analyst"):
        assert api.client.post("/v1/models/v0002/promote", headers=api.headers(role)).status_code == 403
        assert api.client.post("/v1/models/rollback", headers=api.headers(role)).status_code == 403
    assert ModelRegistry(api.service.settings.models_dir).aliases()["production"] == "v0001"


def test_a_promotion_is_served_at_once_recorded_and_rolled_back(two_models: tuple[Api, Settings]) -> None:
    api, settings = two_models
    other_worker = bootstrap.build(settings, freshness=False, watch=False)
    try:
        promoted = api.client.post("/v1/models/v0002/promote", json={"reason": "better on September"},
                                   headers=api.headers("admin"))
        assert promoted.status_code == 200, promoted.get_json()
        assert promoted.get_json() == {"production": "v0002", "previous": "v0001", "serving": "v0002"}
        body = api.body(_any_return(api))
        assessed = api.assess(body).get_json()
        assert (assessed["model_version"], assessed["policy_version"]) == ("v0002", "v0002.p1")
        assert assessed["decision"] in ("review", "deny")  # v0002's policy reviews everything

        assert other_worker.assessor.scorer.version == "v0001"  # another worker, until its next check
        assert other_worker.watch.check() is True
        assert (other_worker.assessor.scorer.version, other_worker.assessor.policy.version) == ("v0002", "v0002.p1")
        assert other_worker.watch.check() is False  # nothing new

        again = api.client.post("/v1/models/v0002/promote", headers=api.headers("admin"))
        assert again.status_code == 409 and "already production" in again.get_json()["message"]
        assert api.client.post("/v1/models/v0009/promote", headers=api.headers("admin")).status_code == 404
        assert api.client.post("/v1/models/v0001/promote", json={"reason": ""},
                               headers=api.headers("admin")).status_code == 422
        back = api.client.post("/v1/models/rollback", headers=api.headers("admin")).get_json()
        assert back == {"production": "v0001", "previous": "v0002", "serving": "v0001"}
        with api.service.sessions() as session:
            events = session.execute(select(EvidenceEvent.kind, EvidenceEvent.payload).where(
                EvidenceEvent.kind.in_(["model_promoted", "model_rolled_back"])).order_by(EvidenceEvent.seq)).all()
        assert [(k, json.loads(p)["from"], json.loads(p)["to"]) for k, p in events] == [
            ("model_promoted", "v0001", "v0002"), ("model_rolled_back", "v0002", "v0001")]
        assert json.loads(events[0][1])["reason"] == "better on September"
    finally:
        other_worker.close()


def test_a_damaged_model_never_replaces_the_one_serving(two_models: tuple[Api, Settings],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    api, settings = two_models
    registry = ModelRegistry(settings.models_dir)
    model = registry.root / "versions" / "v0002" / "model.txt"
    original = model.read_text()
    model.write_text(original.replace("tree", "TREE", 1))
    state = json.loads((registry.root / "aliases.json").read_text())
    state["production"] = "v0002"  # as if promoted by hand, past the checks
    (registry.root / "aliases.json").write_text(json.dumps(state))
    assert api.service.watch.check() is False
    assert api.service.assessor.scorer.version == "v0001"
    assert "cannot be loaded" in caplog.text and caplog.text.count("cannot be loaded") == 1
    assert api.service.watch.check() is False  # not retried (nor logged) until its files or the alias change
    assert caplog.text.count("cannot be loaded") == 1
    # mended: it was never tried again (a helper's probe), and a later promotion of it was ignored
    model.write_text(original)
    assert api.service.watch.check() is True
    assert api.service.assessor.scorer.version == "v0002" and api.service.watch.problem is None


def _any_return(api: Api) -> str:
    import pandas as pd

    returns = pd.read_parquet(api.dataset / "returns.parquet")
    return str(returns.sort_values("return_id")["return_id"].iloc[5])


def _reseal(version_dir: Path) -> None:
    """What someone with write access could do: change a file and recompute every checksum and the seal."""
    import hashlib

    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["checksum"] = "sha256:" + hashlib.sha256((version_dir / "model.txt").read_bytes()).hexdigest()
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    seal = {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
            for p in version_dir.iterdir() if p.name != "seal.json"}
    (version_dir / "seal.json").write_text(json.dumps(seal))


@pytest.mark.parametrize(("edit", "message"), [
    ("calibration", "manifest.json does not match its seal"),
    ("policy", "policy-001.json does not match its seal"),
    ("extra policy", "policy-002.json was added after the model was sealed"),
    ("manifest not json", "manifest.json does not match its seal"),
])
def test_an_edited_manifest_or_policy_is_never_promoted(two_models: tuple[Api, Settings], edit: str,
                                                         message: str) -> None:
    api, settings = two_models
    folder = ModelRegistry(settings.models_dir).root / "versions" / "v0002"
    manifest = json.loads((folder / "manifest.json").read_text())
    if edit == "calibration":
        manifest["calibration"] = {**manifest["calibration"], "slope": 0.0}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif edit == "policy":
        policy = json.loads((folder / "policy-001.json").read_text())
        (folder / "policy-001.json").write_text(json.dumps({**policy, "deny_from": 0.0}))
    elif edit == "extra policy":
        (folder / "policy-002.json").write_text((folder / "policy-001.json").read_text())
    else:
        (folder / "manifest.json").write_text("{not json")
    answer = api.client.post("/v1/models/v0002/promote", headers=api.headers("admin"))
    assert answer.status_code == 409 and message in answer.get_json()["message"]
    assert ModelRegistry(settings.models_dir).aliases()["production"] == "v0001"
    with api.service.sessions() as session:
        assert session.execute(select(EvidenceEvent).where(EvidenceEvent.kind == "model_promoted")).first() is None


def test_a_version_whose_seal_was_deleted_is_refused(two_models: tuple[Api, Settings]) -> None:
    """Deleting seal.json turned the check off (taken for a version from before seals): an edited policy was served
    within seconds, approving everything. A version older than the first sealed one is still taken."""
    api, settings = two_models
    registry = ModelRegistry(settings.models_dir)
    folder = registry.root / "versions" / "v0002"
    (folder / "seal.json").unlink()
    policy = json.loads((folder / "policy-001.json").read_text())
    (folder / "policy-002.json").write_text(json.dumps({**policy, "review_from": 0.999, "deny_from": 0.9999}))
    answer = api.client.post("/v1/models/v0002/promote", headers=api.headers("admin"))
    assert answer.status_code == 409
    assert "v0002: seal.json is missing (every version from v0001 on is sealed when registered)" in \
        answer.get_json()["message"]
    state = json.loads((registry.root / "aliases.json").read_text())
    (registry.root / "aliases.json").write_text(json.dumps({**state, "production": "v0002"}))  # by hand
    assert api.service.watch.check() is False and api.service.assessor.scorer.version == "v0001"
    (registry.root / "versions" / "v0001" / "seal.json").unlink()  # the oldest one's too: sealing began with it
    with pytest.raises(RegistryError, match="seal.json is missing"):
        registry.load("v0001")
    state = json.loads((registry.root / "aliases.json").read_text())
    del state["sealed_from"]  # a registry from before seals: no version sealed, nothing says sealing began
    (registry.root / "aliases.json").write_text(json.dumps(state))
    assert registry.load("v0002").version == "v0002"


def test_a_manifest_listing_the_features_in_another_order_is_refused(two_models: tuple[Api, Settings]) -> None:
    """Two features swapped in the manifest (resealed) fed each value to the other's input: 6 of 60 scores moved."""
    api, settings = two_models
    folder = ModelRegistry(settings.models_dir).root / "versions" / "v0002"
    manifest = json.loads((folder / "manifest.json").read_text())
    features = manifest["features"]
    features[0], features[10] = features[10], features[0]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _reseal(folder)
    answer = api.client.post("/v1/models/v0002/promote", json={"force": True, "reason": "swap"},
                             headers=api.headers("admin"))
    assert answer.status_code == 409, answer.get_json()
    assert f"was trained with {features[10]!r} as input 1, but its manifest lists {features[0]!r} there" in \
        answer.get_json()["message"]


def test_a_resealed_garbage_model_fails_its_probe_and_is_not_promoted(two_models: tuple[Api, Settings]) -> None:
    api, settings = two_models
    folder = ModelRegistry(settings.models_dir).root / "versions" / "v0002"
    (folder / "model.txt").write_text("tree\nnot a LightGBM model at all\n")
    _reseal(folder)
    answer = api.client.post("/v1/models/v0002/promote", headers=api.headers("admin"))
    assert answer.status_code == 409, answer.get_json()
    assert "v0002 cannot be promoted: it does not load and score" in answer.get_json()["message"]
    assert ModelRegistry(settings.models_dir).aliases()["production"] == "v0001"


def test_a_garbage_production_model_leaves_the_watcher_serving_and_readyz_saying_so(
        two_models: tuple[Api, Settings]) -> None:
    api, settings = two_models
    registry = ModelRegistry(settings.models_dir)
    folder = registry.root / "versions" / "v0002"
    (folder / "model.txt").write_text("tree\nnot a LightGBM model at all\n")
    _reseal(folder)
    state = json.loads((registry.root / "aliases.json").read_text())
    state["production"] = "v0002"  # moved by hand, past every check
    (registry.root / "aliases.json").write_text(json.dumps(state))
    assert api.service.watch.check() is False
    assert api.service.assessor.scorer.version == "v0001"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    model = ready.get_json()["checks"]["model"]
    assert model["version"] == "v0001" and "production is now v0002, but it cannot be loaded" in model["problem"]
    assert api.assess(api.body(_any_return(api))).status_code == 201

    booted = bootstrap.build(settings, freshness=False, watch=False)  # a restart boots with the last good model
    try:
        assert booted.assessor is not None and booted.assessor.scorer.version == "v0001"
        booted.watch.check()
        assert booted.watch.problem is not None and "v0002" in booted.watch.problem
    finally:
        booted.close()


def test_the_served_models_files_damaged_on_disk_are_said_on_readyz_and_mended_ones_clear_it(
        two_models: tuple[Api, Settings]) -> None:
    """A truncated model.txt of the model being served left /readyz green (the watcher looked only at the alias and
    the policy's name), while every worker started afterwards had no model to score with (a helper's probe)."""
    api, settings = two_models
    registry = ModelRegistry(settings.models_dir)
    served = registry.aliases()["production"]
    model = registry.root / "versions" / served / "model.txt"
    whole = model.read_bytes()
    assert api.service.watch.check() is False and api.service.watch.problem is None
    model.write_bytes(b"")  # `: > model.txt`
    assert api.service.watch.check() is False
    ready = api.client.get("/readyz").get_json()["checks"]["model"]
    assert ready["version"] == served
    assert f"the files of {served}, the model served, changed on disk" in ready["problem"]
    assert "model.txt does not match its seal" in ready["problem"]
    assert api.assess(api.body(_any_return(api))).status_code == 201  # the loaded copy keeps serving
    model.write_bytes(whole)  # restored
    api.service.watch.check()
    assert api.service.watch.problem is None
    assert "problem" not in api.client.get("/readyz").get_json()["checks"]["model"]


def test_http_promote_refuses_a_model_without_a_passed_gate_and_force_needs_a_reason(
        two_models: tuple[Api, Settings]) -> None:
    api, settings = two_models
    registry = ModelRegistry(settings.models_dir)
    record = registry.load("v0001")
    registry.register(record.model_text(), {**record.manifest, "note": "no test window"}, record.policy)
    admin = api.headers("admin")
    refused = api.client.post("/v1/models/v0003/promote", json={"reason": "looks fine"}, headers=admin)
    assert refused.status_code == 409
    assert "v0003 has no out-of-time evaluation" in refused.get_json()["message"]
    assert '"force": true, "reason"` over HTTP' in refused.get_json()["message"]  # it named only the CLI's flags
    loose = api.client.post("/v1/models/v0003/promote", json={"force": "yes", "reason": "r"}, headers=admin)
    assert loose.status_code == 422 and loose.get_json()["problems"][0]["field"] == "force"  # "yes" was taken as true
    no_reason = api.client.post("/v1/models/v0003/promote", json={"force": True}, headers=admin)
    assert no_reason.status_code == 422 and "reason" in json.dumps(no_reason.get_json())
    assert registry.aliases()["production"] == "v0001"
    forced = api.client.post("/v1/models/v0003/promote", json={"force": True, "reason": "hotfix for a leak"},
                             headers=admin)
    assert forced.status_code == 200, forced.get_json()
    assert forced.get_json()["production"] == "v0003"
    with api.service.sessions() as session:
        payload = session.execute(select(EvidenceEvent.payload).where(
            EvidenceEvent.kind == "model_promoted")).scalar_one()
    body = json.loads(payload)
    assert body["forced"] is True and body["reason"] == "hotfix for a leak"
    assert "v0003 has no out-of-time evaluation" in body["gate_refusal"]


def test_a_registry_that_lost_its_aliases_file_is_a_server_error_saying_how_to_repair(
        two_models: tuple[Api, Settings]) -> None:
    """It was a 400, as if the analyst's request were at fault."""
    api, settings = two_models
    (ModelRegistry(settings.models_dir).root / "aliases.json").unlink()
    answer = api.client.get("/v1/models", headers=api.headers("analyst"))
    assert answer.status_code == 500 and answer.get_json()["error"] == "registry_damaged"
    assert "restore-aliases" in answer.get_json()["message"]
