"""Pure polars transforms behind the registry's aggregated datasets (no Prefect here).

Each is ``fn(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame | pl.DataFrame``, with ``inputs``
keyed by upstream dataset name, and is named in the registry's ``transform`` column as
``pipelines.transforms.<topic>:<function>``.
"""
