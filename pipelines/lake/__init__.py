"""The lake: the only code that writes, deletes or vacuums Delta tables or reads committed state.

``layout`` (zones, system columns, raw naming), ``state`` (committed state, changes since a
version), ``table`` (the :class:`Lake` and its one commit API), ``quarantine``, ``ledger``
(``_meta`` runs and schemas) and ``raw`` (landing into the raw zone: staging, content hash,
manifest, sweeping). It builds on components' base ingredients (Storage, environment) and never
imports workflows, cookbooks, quality or sharing.
"""

from pipelines.lake.layout import STATE_KEY
from pipelines.lake.table import CommitConflict, Lake

__all__ = ["STATE_KEY", "CommitConflict", "Lake"]
