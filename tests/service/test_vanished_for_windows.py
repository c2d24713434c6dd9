"""Terms gone for the last N windows: the pure intersection and the evaluation route."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.domain.db import session_scope
from service.domain.errors import Invalid
from service.domain.history import vanished_for_windows
from service.domain.tables import Evaluation, MonitoredModel
from tests.service.api_fixtures import assert_problem
from tests.web import seeding


def _evidence(*terms: str) -> dict:
    return {"vanished": [{"term": t, "expected": 10.0 - k, "observed": 0}
                         for k, t in enumerate(terms)]}


def test_terms_gone_in_every_window_are_listed_in_the_newest_windows_order():
    newest_first = [_evidence("zephyr", "walrus", "sonnet"), _evidence("walrus", "zephyr"),
                    _evidence("sonnet", "zephyr", "walrus"), _evidence()]
    out = vanished_for_windows(newest_first, 3)
    assert out == {"windows": 3, "available": 3, "terms": [
        {"term": "zephyr", "expected": 10.0, "observed": 0},
        {"term": "walrus", "expected": 9.0, "observed": 0}]}
    # the fourth (oldest) window lists nothing: nothing is gone for four windows
    assert vanished_for_windows(newest_first, 4)["terms"] == []
    assert [t["term"] for t in vanished_for_windows(newest_first, 1)["terms"]] == [
        "zephyr", "walrus", "sonnet"]


def test_too_few_windows_or_a_window_without_evidence_list_no_term():
    two = [_evidence("zephyr"), _evidence("zephyr")]
    assert vanished_for_windows(two, 3) == {"windows": 3, "available": 2, "terms": []}
    assert vanished_for_windows([_evidence("zephyr"), None, _evidence("zephyr")], 3)[
        "terms"] == []
    assert vanished_for_windows([_evidence("zephyr"), {"overrepresented": []}], 2)[
        "terms"] == []
    with pytest.raises(Invalid):
        vanished_for_windows(two, 0)


@pytest.fixture
def collapsing_model(client, service_env, human_documents) -> dict[int, int]:
    """A model with 10 scored windows whose vanished words accumulate (word k is gone
    from window 9 - k on) and one failed window in between; window index -> id."""
    with session_scope() as session:
        ref = seeding.seed_reference(session, "vanishing-ref", human_documents[:50])
        model = seeding.seed_model(session, "fading", ref)
        seeding.seed_evaluations(session, model, ref, 10, seeding.collapsing, seed=3,
                                 evidence=seeding.collapse_evidence)
        # a failed window (no result) between two scored ones is skipped, not "no terms"
        failed = session.scalars(select(Evaluation).where(
            Evaluation.model_id == model.id, Evaluation.window_index == 5)).one()
        failed.status, failed.result, failed.window_index = "failed", None, 100
        model_id = model.id
    with session_scope() as session:
        rows = session.scalars(select(Evaluation).where(Evaluation.model_id == model_id))
        return {e.window_index: e.id for e in rows}


def _vanished(client, eid: int, query: str = "") -> dict:
    response = client.get(f"/api/v1/models/fading/evaluations/{eid}{query}")
    assert response.status_code == 200, response.text
    return response.json()["vanished_for_windows"]


def test_evaluation_detail_lists_terms_gone_for_the_last_three_windows(collapsing_model,
                                                                       client):
    latest = _vanished(client, collapsing_model[9])
    # window 9 lists all ten words, window 8 nine, window 7 eight: those eight are gone for 3
    assert latest["windows"] == 3 and latest["available"] == 3
    assert [t["term"] for t in latest["terms"]] == seeding.VANISHING[2:]
    assert [t["term"] for t in _vanished(client, collapsing_model[9], "?vanished_windows=1")[
        "terms"]] == seeding.VANISHING
    # an older window looks back from itself: window 7, 6, then 4 and 3 (5 failed: skipped)
    older = _vanished(client, collapsing_model[7], "?vanished_windows=4")
    assert [t["term"] for t in older["terms"]] == seeding.VANISHING[6:]
    # more windows than the model has scored: nothing is gone for that long
    assert _vanished(client, collapsing_model[9], "?vanished_windows=50") == {
        "windows": 50, "available": 9, "terms": []}


def test_failed_window_has_no_vanished_for_windows(collapsing_model, client):
    response = client.get(f"/api/v1/models/fading/evaluations/{collapsing_model[100]}")
    assert response.status_code == 200
    assert "vanished_for_windows" not in response.json()


@pytest.mark.parametrize("query", ["0", "51", "-1", "three"])
def test_vanished_windows_out_of_range_is_a_422_problem(collapsing_model, client, query):
    response = client.get(f"/api/v1/models/fading/evaluations/{collapsing_model[9]}"
                          f"?vanished_windows={query}")
    assert_problem(response, 422, "vanished_windows")
    with session_scope() as session:
        model = session.scalars(select(MonitoredModel).where(
            MonitoredModel.name == "fading")).one()
        assert session.query(Evaluation).filter_by(model_id=model.id).count() == 10
