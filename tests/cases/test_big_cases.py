"""A case too big for one page: its page shows the case's own changes, not one join event per assessment (a
bundle still holds them all), and case pages are built one at a time, resting between builds under contention."""

from __future__ import annotations

import time
from pathlib import Path

from fraud_service.cases import investigation
from fraud_service.cases import service as cases
from tests.factories import T0, flag, memory_db


def test_a_paged_case_leaves_out_the_join_events_a_bundle_keeps() -> None:
    with memory_db() as db:
        case_id = ""
        for _ in range(cases.PAGE + 5):
            case_id = flag(db, customer="c-big")["case_id"]
        with db.sessions() as session:
            page = cases.detail(session, case_id, T0, limit=cases.PAGE)
            whole = cases.detail(session, case_id, T0)
    kinds = [e.kind for e in page.events]
    assert page.assessments_total == cases.PAGE + 5 and len(page.assessments) == cases.PAGE
    assert "case_joined" not in kinds and kinds.count("case_opened") == 1 and kinds.count("assessment") == cases.PAGE
    assert [e.kind for e in whole.events].count("case_joined") == cases.PAGE + 4  # every join, for the bundle


def test_a_small_case_page_keeps_its_join_events() -> None:
    with memory_db() as db:
        for _ in range(3):
            case_id = flag(db, customer="c-small")["case_id"]
        with db.sessions() as session:
            page = cases.detail(session, case_id, T0, limit=cases.PAGE)
    assert [e.kind for e in page.events].count("case_joined") == 2


def test_builds_take_turns_and_rest_after_a_long_one(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    with investigation.one_at_a_time(warehouse):
        pass
    lock = tmp_path / "case-pages.lock"
    ended, took = (float(x) for x in lock.read_text().split())
    assert 0 <= took < 1 and ended <= time.monotonic()
    lock.write_text(f"{time.monotonic()} 0.3")  # a build of 0.3 s just ended
    started = time.monotonic()
    with investigation.one_at_a_time(warehouse):
        waited = time.monotonic() - started
    assert waited >= 0.3 * (1 / investigation.PAGE_SHARE - 1) - 0.01
    lock.write_text("not numbers")  # a damaged file is no obstacle, and is written afresh
    with investigation.one_at_a_time(warehouse):
        pass
    assert len([float(x) for x in lock.read_text().split()]) == 2
