"""Artifact keys carry the namespace (the cookbook run is checked in tests/cookbooks/test_flights_observability.py)."""

from pipelines.components.summary import artifact_key


def test_artifact_keys_carry_the_namespace_in_prefects_alphabet():
    assert artifact_key("research-feature-x", "ingest", "flight_delays_daily") == (
        "research-feature-x-ingest-flight-delays-daily"
    )
    assert artifact_key("e2e", "e2e-report") == "e2e-e2e-report"
