"""Freshness verdicts (the cookbook-level status tests are in tests/cookbooks/test_flights_observability.py)."""

from datetime import UTC, datetime, timedelta

from pipelines.components.status import freshness_verdict


def test_freshness_verdicts():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert freshness_verdict(None, at, at) == "not_checked"
    assert freshness_verdict(timedelta(hours=1), None, at) == "never_committed"
    assert freshness_verdict(timedelta(hours=1), at, at + timedelta(minutes=59)) == "fresh"
    assert freshness_verdict(timedelta(hours=1), at, at + timedelta(minutes=61)) == "stale"
