"""The peer benchmark's baseline, run in the dlt venv: one CSV -> PostgreSQL with dlt's merge.

    python _dlt_merge.py --csv FILE --pipelines-dir DIR --dataset NAME

PostgreSQL credentials come from DESTINATION__POSTGRES__CREDENTIALS (dlt's own configuration).
The CSV is read with the contract's types (the same parsing ingest does), then loaded with
write disposition merge on the primary key, keeping the row with the latest updated_at per key.
Timed after the imports; reports seconds and the rows read and loaded.
"""

from __future__ import annotations

import argparse
import time

import dlt
import polars as pl

from bench._child import report

SCHEMA = {
    "event_id": pl.Int64,
    "customer_id": pl.Int32,
    "amount": pl.Decimal(12, 2),
    "currency": pl.String,
    "status": pl.String,
    "event_at": pl.String,
    "updated_at": pl.String,
}
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args()
    pipeline = dlt.pipeline(
        pipeline_name="peer",
        destination="postgres",
        dataset_name=args.dataset,
        pipelines_dir=args.pipelines_dir,
    )
    started = time.perf_counter()
    frame = pl.read_csv(args.csv, schema=SCHEMA, null_values=["NA"]).with_columns(
        pl.col("event_at", "updated_at").str.strptime(pl.Datetime("us"), DATETIME_FORMAT)
    )
    info = pipeline.run(
        frame.to_arrow(),
        table_name="events",
        primary_key="event_id",
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns={"updated_at": {"dedup_sort": "desc"}},
        loader_file_format="csv",
    )
    info.raise_on_failed_jobs()
    report(seconds=time.perf_counter() - started, rows_read=frame.height)


if __name__ == "__main__":
    main()
