"""peer: the same CSV into PostgreSQL with a merge on the key: ingest + share against dlt.

Ours is the ingest flow (raw copy, typed, quarantine-checked, deduplicated Delta table) followed
by the share flow in merge mode into an empty PostgreSQL database. The peer is dlt (write
disposition merge, primary key event_id, latest updated_at wins, postgres destination, CSV load
files), reading the same CSV with the contract's types. dlt needs pendulum>=3 and Prefect 2
pendulum<3, so it runs in a venv of its own (bench._isolated) and times itself after its imports.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench import _common, _data, _postgres
from bench._harness import Benchmark, Case, Context, Measurement, Target
from bench._isolated import IsolatedPython

DLT = IsolatedPython("dlt", ("dlt[postgres]>=1.5,<2", "polars>=1.20", "pyarrow>=15"))
SCRIPT = Path(__file__).resolve().parent / "_dlt_merge.py"
DLT_DATASET = "peer"

# Both tables must hold the same rows; dlt picks its own types (numeric(38,9), timestamptz), so the
# digest compares values in type-neutral forms.
_DIGEST = (
    "SELECT count(*), sum(event_id), sum(customer_id), sum(amount)::numeric(20, 2)::text, count(status), "
    "sum(hashtext(coalesce(status, '') || currency)::bigint), "
    "sum(extract(epoch FROM event_at))::text, sum(extract(epoch FROM updated_at))::text FROM {table}"
)


def setup(rows: int, context: Context) -> Case:
    landing = _data.events_landing(context.cache, rows)
    csv_path = landing / "events" / "part-0000.csv"
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    ours_data, dlt_dir = context.work / "ours", context.work / "dlt"
    DLT.ensure(context.cache)  # build the venv untimed, before any run
    databases = _postgres.Databases("peer")
    ours_db, dlt_db = f"{databases.prefix}_ours", f"{databases.prefix}_dlt"
    credentials = {
        "DESTINATION__POSTGRES__CREDENTIALS": (
            f"postgresql://{_postgres.USER}:unused@{_postgres.HOST}:{_postgres.PORT}/{dlt_db}"
        ),
        "RUNTIME__LOG_LEVEL": "ERROR",
        "DLT_DATA_DIR": str(dlt_dir / "home"),
        "DLT_PROJECT_DIR": str(dlt_dir),
    }
    counts: dict[str, int] = {}

    def ours():
        ingested = _common.run_ingest(data=ours_data, landing=landing, registry=registry)
        shared = _common.run_share(
            data=ours_data, landing=landing, registry=registry, warehouse_url=_postgres.url(ours_db)
        )
        if (shared.mode, shared.rows) != ("merge", ingested.written):
            raise AssertionError(f"the share should merge the {ingested.written} ingested rows, got {shared}")
        counts["ours_rows"] = shared.rows

    def baseline():
        _, values = DLT.run(
            context.cache,
            SCRIPT,
            "--csv",
            str(csv_path),
            "--pipelines-dir",
            str(dlt_dir / "pipelines"),
            "--dataset",
            DLT_DATASET,
            env=credentials,
        )
        if values["rows_read"] != rows:
            raise AssertionError(f"dlt read {values['rows_read']} rows, the CSV has {rows}")
        return Measurement(values["seconds"], values)

    def reset_ours():
        _common.fresh(ours_data)
        databases.create("ours")

    def reset_baseline():
        shutil.rmtree(dlt_dir, ignore_errors=True)
        databases.create("dlt")

    def verify() -> dict:
        left = _postgres.fetch(ours_db, _DIGEST.format(table='"bench"."events"'))[0]
        right = _postgres.fetch(dlt_db, _DIGEST.format(table=f'"{DLT_DATASET}"."events"'))[0]
        if left != right:
            raise AssertionError(f"ours holds {left}, dlt {right}: the tables differ")
        return {"rows": int(left[0]), "csv_rows": rows}

    return Case(
        ours=ours,
        baseline=baseline,
        reset_ours=reset_ours,
        reset_baseline=reset_baseline,
        verify=verify,
        cleanup=databases.drop_all,
        details={
            "databases": f"{databases.prefix}_*",
            "csv_bytes": os.path.getsize(csv_path),
            "dlt_python": str(DLT.ensure(context.cache)),
        },
    )


BENCHMARK = Benchmark(
    name="peer",
    ours="ingest flow (raw copy, typed, deduplicated Delta table) + share flow (merge) into an empty "
    "PostgreSQL database",
    baseline="dlt in its own venv: the CSV read with the contract's types, pipeline.run with write "
    "disposition merge (delete-insert, primary key, latest updated_at wins) to postgres",
    target=Target(2.0, ">=", "≥ 2x dlt's speed"),
    setup=setup,
    quick_size=10_000,
    full_size=1_000_000,
    describe_size=lambda rows: f"{rows:,} rows",
    score=lambda ours, baseline, case: baseline.median / ours.median,
    score_unit="x speed",
    order=50,
)
