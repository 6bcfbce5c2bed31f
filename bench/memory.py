"""memory: peak RSS of a whole ingest (fresh interpreter each) as the input grows 4x."""

from __future__ import annotations

import sys

from bench import _child, _common, _data, _env
from bench._harness import Benchmark, Case, Context, Measurement, Target


def setup(rows: int, context: Context) -> Case:
    small, large = rows, rows * 4
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    landings = {n: _data.events_landing(context.cache, n) for n in (small, large)}
    data = context.work / "data"

    def peak(n: int) -> Measurement:
        _common.fresh(data)
        command = [sys.executable, "-m", "bench._child", "ours", "--landing", str(landings[n])]
        command += ["--registry", str(registry), "--data", str(data)]
        wall, values = _child.run(command, env=_env.child_env())
        if values["rows_written"] <= 0:
            raise AssertionError(f"the ingest of {n} rows wrote nothing")
        values["wall_seconds"] = round(wall, 3)
        return Measurement(values["peak_rss_mib"], values)

    return Case(
        ours=lambda: peak(large),
        baseline=lambda: peak(small),
        cleanup=lambda: _common.fresh(data),
        details={
            "csv_bytes": {
                str(n): (landings[n] / "events" / "part-0000.csv").stat().st_size for n in landings
            },
            "notes": "ours is the larger input, the baseline the smaller one: the ratio is how much "
            "the peak grows when the input grows 4x (1.0 = bounded, 4.0 = proportional)",
        },
    )


BENCHMARK = Benchmark(
    name="memory",
    ours="peak RSS of the ingest flow (fresh interpreter) on 4x the rows",
    baseline="peak RSS of the same ingest on 1x the rows",
    target=Target(1.5, "<=", "peak RSS ≤ 1.5x as the input grows 4x"),
    setup=setup,
    quick_size=10_000,
    full_size=5_000_000,
    describe_size=lambda rows: f"{rows:,} -> {rows * 4:,} rows",
    unit="MiB",
    runs=1,
    warmup=0,
    order=80,
)
