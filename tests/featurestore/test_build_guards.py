"""A feature build that ran alongside another, was interrupted, or went stale is never taken for a good one."""

from __future__ import annotations

import fcntl

import pandas as pd
import pytest

import fraud_service.featurestore.source as source_module
from fraud_service.data.ingest import ingest
from fraud_service.data.warehouse import Warehouse
from fraud_service.errors import FeatureStoreError, TrainingDataError
from fraud_service.health import check_features
from training.trainset import Window, feature_frame


def test_a_second_build_is_refused_while_one_runs(live_world):
    source = live_world["source"]
    with open(source.data_dir / ".build-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build in another process
        with pytest.raises(FeatureStoreError, match="another `features build` is running"):
            source.build()
    assert source.manifest() is not None  # the running build's last manifest is untouched


def test_an_interrupted_build_leaves_no_build_to_load_or_train_on(live_world, monkeypatch):
    source = live_world["source"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(source_module, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        source.build()

    assert source.manifest() is not None  # the last build's, which workers still start on (the online store)
    with pytest.raises(FeatureStoreError, match="no whole feature build to load: the last `features build` was "
                                                "interrupted: run it again"):
        source.materialize()  # some files may be new, some old
    check = check_features(live_world["settings"])
    assert not check.ok and "was interrupted" in check.detail
    with pytest.raises(TrainingDataError, match="no whole build: the last `features build` was interrupted"):
        feature_frame(source, live_world["snapshot"],
                      Window(pd.Timestamp("2000-01-01", tz="UTC"), live_world["opened"]))
    with open(source.data_dir / ".build-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build running now, in another process
        assert "under way" in str(source.unfinished())
    monkeypatch.undo()
    source.build()  # a whole build again: the marker goes
    assert source.unfinished() is None and check_features(live_world["settings"]).ok is False  # not loaded yet
    source.materialize()
    assert check_features(live_world["settings"]).ok


def test_doctor_says_the_features_are_behind_an_ingest(live_world):
    settings = live_world["settings"]
    assert check_features(settings).ok
    world = live_world["root"] / "world"
    labels = world / "labels.parquet"
    frame = pd.read_parquet(labels)
    frame.iloc[:1].assign(labelled_at=frame["labelled_at"].iloc[0] + pd.Timedelta(days=1),
                          source="analyst").to_parquet(labels, index=False)
    ingest(world, Warehouse(settings.warehouse_dir))

    check = check_features(settings)
    assert not check.ok
    assert "built from snapshot 000001, but the warehouse is at 000002" in check.detail


def test_materialize_refuses_a_time_that_has_not_come(cli):
    code, _, err = cli("features", "materialize", "--until", "2200-01-01")
    assert code != 0 and "is in the future" in err
    code, _, err = cli("features", "materialize", "--until", "1900-01-01")
    assert code != 0 and "before any feature row" in err


def test_materialize_refuses_a_time_before_the_first_feature_row(live_world, cli, monkeypatch):
    settings = live_world["settings"]
    monkeypatch.setenv("FRAUD_HOME", str(settings.home))
    before = (settings.home / "features" / "materialized.json").read_bytes()
    code, out, err = cli("features", "materialize", "--until", "1999-01-01", "--full")
    assert (code, out) == (1, "")
    assert "--until 1999-01-01T00:00:00+00:00 is before the first feature row (20" in err
    assert "the online store would hold no entity's features" in err
    assert (settings.home / "features" / "materialized.json").read_bytes() == before


def test_materialize_prints_its_result_alone_on_stdout(live_world, cli, monkeypatch):
    monkeypatch.setenv("FRAUD_HOME", str(live_world["settings"].home))
    code, out, err = cli("features", "materialize", "--full")  # the cli fixture runs with --quiet
    assert code == 0
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith("online store (sqlite) holds")]
    assert len(out.splitlines()) == 1 and err == ""


def test_an_interrupted_or_killed_materialize_does_not_stop_training(live_world, monkeypatch):
    """Feast marks a view MATERIALIZING while it loads it and puts it back only on an Exception: after an interrupt
    (or a kill) historical retrieval refused the view, and train failed until a materialize ran through."""
    from feast.feature_view import FeatureViewState
    from feast.infra.passthrough_provider import PassthroughProvider

    source = live_world["source"]
    snapshot = live_world["snapshot"]
    window = Window(pd.Timestamp("2000-01-01", tz="UTC"), live_world["opened"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PassthroughProvider, "materialize_single_feature_view", interrupted)
    with pytest.raises(KeyboardInterrupt):
        source.materialize(full=True)
    monkeypatch.undo()
    states = {v.name: v.state for v in source.store().list_feature_views(allow_cache=False)}
    assert FeatureViewState.MATERIALIZING not in states.values(), states
    assert len(feature_frame(source, snapshot, window)) > 0

    store = source.store()  # a materialize killed outright leaves its view marked
    view = store.list_feature_views(allow_cache=False)[0]
    view.state = FeatureViewState.MATERIALIZING
    store.registry.apply_feature_view(view, store.project, commit=True)
    assert len(feature_frame(source, snapshot, window)) > 0
