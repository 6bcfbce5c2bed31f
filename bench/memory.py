"""memory: peak RSS of a whole ingest (fresh interpreter each) as the input grows 4x."""

from __future__ import annotations

import sys

from bench import _child, _common, _data, _env
from bench._harness import Benchmark, Case, Context, Measurement, Target


def available_mib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _refuse_if_it_may_not_fit(small_peaks: list[float]) -> None:
    """The 4x run is started only when 4x the 1x peak (proportional growth) fits in 90% of the free memory."""
    available = available_mib()
    if not small_peaks or available is None:
        return
    projected = 4 * max(small_peaks)
    if projected > 0.9 * available:
        raise MemoryError(
            f"not run: the 4x input may need up to {projected / 1024:.1f} GiB (4 x the 1x peak of "
            f"{max(small_peaks) / 1024:.1f} GiB) and only {available / 1024:.1f} GiB is available. "
            "Run `python -m bench --only memory` when the machine is idle, or on a machine with more memory."
        )


def setup(rows: int, context: Context) -> Case:
    small, large = rows, rows * 4
    registry = _data.write_registry(context.work / "registry", {"events": "events/*.csv"})
    landings = {n: _data.events_landing(context.cache, n) for n in (small, large)}
    data = context.work / "data"

    small_peaks: list[float] = []

    def peak(n: int) -> Measurement:
        if n == large:
            _refuse_if_it_may_not_fit(small_peaks)
        _common.fresh(data)
        command = [sys.executable, "-m", "bench._child", "ours", "--landing", str(landings[n])]
        command += ["--registry", str(registry), "--data", str(data)]
        wall, values = _child.run(command, env=_env.child_env())
        if values["rows_written"] <= 0:
            raise AssertionError(f"the ingest of {n} rows wrote nothing")
        values["wall_seconds"] = round(wall, 3)
        if n == small:
            small_peaks.append(values["peak_rss_mib"])
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
    baseline_first=True,  # the 1x peak decides whether the 4x run fits in memory
    order=80,
)
