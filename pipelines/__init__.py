"""pipelines: a Prefect 2 flow library for data pipelines you can trust."""

import os

__version__ = "0.1.0"

# polars' allocator (jemalloc) hands freed pages back lazily (MADV_FREE, polars' muzzy_decay_ms:1000): the
# kernel takes them only under memory pressure, so until then they still count in the process's RSS, which
# is what Dask's nanny and most monitors judge a worker by. Returned at once instead (muzzy_decay_ms:0), a
# 20M-row ingest peaked at 2,315 MiB instead of 2,546 MiB, at no measurable cost in time
# (docs/ingestion.md#batches-and-memory). jemalloc reads this when polars is first imported, after polars'
# own defaults. A value of the user's wins; polars' own defaults, written into the environment by a polars
# imported earlier (here or in a parent process), are not a user's choice.
_POLARS_DEFAULT_CONF = "dirty_decay_ms:500,muzzy_decay_ms:1000"
if os.environ.get("_RJEM_MALLOC_CONF", _POLARS_DEFAULT_CONF) == _POLARS_DEFAULT_CONF:
    os.environ["_RJEM_MALLOC_CONF"] = f"{_POLARS_DEFAULT_CONF},muzzy_decay_ms:0"
