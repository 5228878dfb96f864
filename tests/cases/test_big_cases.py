"""A case too big for one page: its page shows the case's own changes, not one join event per assessment (a
bundle still holds them all), and case pages are built one at a time."""

from __future__ import annotations

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


def test_builds_take_turns(tmp_path: Path) -> None:
    """A second build (another thread here; each build opens the lock file itself, as another worker would)
    waits while the first holds the host's turn."""
    import threading

    warehouse = tmp_path / "warehouse"
    inside, order = threading.Event(), []

    def other() -> None:
        inside.wait()
        with investigation.one_at_a_time(warehouse):
            order.append("second")

    thread = threading.Thread(target=other)
    thread.start()
    with investigation.one_at_a_time(warehouse):
        inside.set()
        thread.join(timeout=0.3)  # it cannot get in while this build holds the turn
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
