"""Every aggregated dataset of the shipped registry: its transform loads and returns its contract's schema."""

import importlib

import polars as pl
import pytest

from pipelines.components.environment import DEFAULT_REGISTRY
from pipelines.components.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY)
AGGREGATED = [spec for spec in REGISTRY if spec.stage == "aggregated"]


def _empty_input(name: str) -> pl.LazyFrame:
    spec = REGISTRY.get(name)
    schema = dict(spec.contract.schema)
    if spec.stage == "cleaned" or spec.partition_field:
        schema["_partition"] = pl.String()
    return pl.DataFrame(schema=schema).lazy()


def test_the_shipped_registry_has_the_aggregates_the_cookbooks_build():
    assert {s.name for s in AGGREGATED} >= {
        "flight_delays_daily",
        "likes_per_user",
        "user_top3_avg",
        "top_users",
    }


@pytest.mark.parametrize("spec", AGGREGATED, ids=lambda s: s.name)
def test_transform_returns_exactly_the_contract_columns_and_types(spec):
    module, function = spec.transform.split(":")
    transform = getattr(importlib.import_module(module), function)
    out = transform({name: _empty_input(name) for name in spec.inputs})
    out = out.collect() if isinstance(out, pl.LazyFrame) else out
    assert sorted(out.columns) == sorted(spec.contract.columns)
    for name, column in spec.contract.columns.items():
        assert out.schema[name] == column.dtype, f"{spec.name}.{name}"
    assert set(spec.primary_key) <= set(out.columns)
    if spec.partition_field:
        assert spec.partition_field in out.columns
