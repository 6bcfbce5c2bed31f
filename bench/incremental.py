"""incremental: +1% new and late rows after a full load, against the full run of the same data."""

from __future__ import annotations

import os

from bench import _common, _data, _handwritten
from bench._harness import Benchmark, Case, Context, Target


def setup(rows: int, context: Context) -> Case:
    generated = _data.events_landing(context.cache, rows, with_increment=True)  # part-0000 + part-0001
    # One landing folder, as a user has: part-0000 alone for the full load, then the increment arrives
    # next to it (the landing manifest knows part-0000 by its location, so it is not read again).
    landing = context.work / "landing"
    (landing / "events").mkdir(parents=True)
    os.link(generated / "events" / "part-0000.csv", landing / "events" / "part-0000.csv")
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})

    loaded = context.work / "loaded"  # the namespace after the full load, built once, untimed
    base = _common.run_ingest(data=loaded, landing=landing, registry=registry)
    os.link(generated / "events" / "part-0001.csv", landing / "events" / "part-0001.csv")
    ours_data, full_data = context.work / "ours", context.work / "full"
    # the floor: the same increment merged by hand into a hand-written table of the base file
    hand_base, hand = context.work / "hand-base", context.work / "hand"
    _handwritten.ingest_csv([landing / "events" / "part-0000.csv"], hand_base)
    increment_rows: list[int] = []

    def ours():
        result = _common.run_ingest(data=ours_data, landing=landing, registry=registry)
        if result.mode != "incremental" or len(result.processed_files) != 1 or result.skipped_files != 1:
            raise AssertionError(
                f"expected an incremental run of one new file, the other known, got {result}"
            )
        increment_rows[:] = [result.rows_in, result.late_rows]

    def full():
        result = _common.run_ingest(data=full_data, landing=landing, registry=registry)
        if len(result.processed_files) != 2:
            raise AssertionError(f"expected a full run of both files, got {result.processed_files}")

    def verify() -> dict:
        facts = _common.same_table(_common.cleaned_path(ours_data), _common.cleaned_path(full_data))
        facts["increment_rows"], facts["late_rows"] = increment_rows
        _common.same_table(_common.cleaned_path(ours_data), hand)  # the floor did the same work
        return facts

    return Case(
        ours=ours,
        baseline=full,
        reset_ours=lambda: _common.link_tree(loaded, ours_data),
        reset_baseline=lambda: _common.fresh(full_data),
        verify=verify,
        floor=lambda: _handwritten.merge_csv([landing / "events" / "part-0001.csv"], hand),
        reset_floor=lambda: _common.link_tree(hand_base, hand),
        details={"base_rows_written": base.written},
    )


BENCHMARK = Benchmark(
    name="incremental",
    ours="the ingest flow on +1% rows (half new keys, half late updates of old partitions) after "
    "a full load: land, merge on the key, ledger",
    baseline="the full run: the ingest flow loading the base file and the increment into an empty namespace",
    target=Target(0.10, "<=", "≤ 0.10x the full run's time"),
    floor="hand-written polars + one delta-rs upsert of the increment into a table of the base file "
    "(delta-rs merges copy on write: every file holding a matched key is rewritten)",
    setup=setup,
    quick_size=20_000,
    full_size=5_000_000,
    describe_size=lambda rows: f"{rows:,} + {rows // 100:,} rows",
    order=20,
)
