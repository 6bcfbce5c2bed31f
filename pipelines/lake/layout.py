"""Where things live in a namespace's data root, and the columns the lake adds: each defined once.

```
<namespace>/raw/<dataset>/ingest_date=YYYY-MM-DD/<run_id>-<arrival>-<content_hash>.<ext>
<namespace>/raw/<dataset>/_landed.json      landing manifest (source identity -> raw file)
<namespace>/raw/<dataset>/_expired.json     raw files whose PII retention expired (see lake/retention.py)
<namespace>/cleaned/<dataset>/              Delta
<namespace>/quarantine/<dataset>/           Delta
<namespace>/aggregated/<dataset>/           Delta
<namespace>/_meta/<table>/                  Delta (runs, schemas, validations, partitions)
<namespace>/_tmp/                           files being written (moved into place when whole)
```
"""

from __future__ import annotations

RAW, CLEANED, QUARANTINE, AGGREGATED, META = "raw", "cleaned", "quarantine", "aggregated", "_meta"
TMP = "_tmp"
MANIFEST = "_landed.json"
EXPIRED = "_expired.json"

# Columns the lake adds to every cleaned and aggregated row.
RUN_ID = "_run_id"
INGESTED_AT = "_ingested_at"
PARTITION = "_partition"
# Lineage of a cleaned row: the raw file, its line there, and the arrival order (tie-break).
SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"
SEQ = "_seq"
LINEAGE = (SOURCE_FILE, SOURCE_LINE, SEQ)
SYSTEM_COLUMNS = (*LINEAGE, PARTITION, RUN_ID, INGESTED_AT)

# The key, in a Delta commit's metadata, of the pipelines state committed with that data.
STATE_KEY = "pipelines.state"


def raw_dir(dataset: str) -> str:
    return f"{RAW}/{dataset}"


def raw_glob(dataset: str) -> str:
    """Every raw file of a dataset (the manifest and hidden files do not match)."""
    return f"{RAW}/{dataset}/ingest_date=*/*"


def raw_name(dataset: str, day: str, run_id: str, arrival: int, digest: str, ext: str) -> str:
    """The raw path of content landed on ``day`` by ``run_id`` as its ``arrival``-th new file.

    Raw paths sort in arrival order (day, run id, arrival), which is the order rows are ingested
    in and the tie-break of last-wins deduplication, also when a run resumes another's files.
    """
    return f"{RAW}/{dataset}/ingest_date={day}/{run_id}-{arrival:06d}-{digest}.{ext}"


def raw_hash(rel: str) -> str | None:
    """The content hash in a raw file name <run_id>[-<arrival>]-<hash>.<ext>, or None for another name."""
    stem = rel.rsplit("/", 1)[-1].split(".", 1)[0]
    return stem.rsplit("-", 1)[1] if "-" in stem else None


def extension(name: str) -> str:
    """A landed file's extension as kept in raw (``csv``, ``csv.gz``), ``dat`` when it has none."""
    base = name.rsplit("/", 1)[-1]
    return base.split(".", 1)[1].lower() if "." in base else "dat"
