"""Where ingest spends its time and memory: a stage-by-stage breakdown of one full load and one
incremental run (+1% new and late rows), at one or more sizes.

    python -m bench.profile_ingest [--rows 1000000 5000000] [--out DIR] [--cprofile N]

Each stage is timed with time.perf_counter (and the process's CPU time, which moves less than wall
time on a shared machine) by wrapping the functions the flow calls; a sampler
thread reads the process's resident memory every 5 ms, so every stage also reports the peak RSS
seen while it ran (polars, Arrow and delta-rs allocate outside Python, so tracemalloc would not
see them). "prefect (flow + task runs)" is the flow's wall time minus the time spent inside the
task bodies and the flow body: what the orchestration itself costs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import _env

_PAGE = os.sysconf("SC_PAGE_SIZE")
_END = object()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


class Recorder:
    """Stage timings (wall seconds, calls) and the peak RSS observed while each stage was active."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._active: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._originals: list[tuple[object, str, object]] = []

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            rss = _rss()
            with self._lock:
                for stage in list(self._active):
                    stage["peak"] = max(stage["peak"], rss)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def stage(self, name: str):
        entry = self.stages.setdefault(
            name, {"seconds": 0.0, "calls": 0, "peak": 0, "start_rss": _rss(), "cpu": 0.0}
        )
        live = {"peak": _rss()}
        with self._lock:
            self._active.append(live)
        started, cpu = time.perf_counter(), _cpu()
        try:
            yield
        finally:
            entry["seconds"] += time.perf_counter() - started
            entry["cpu"] += _cpu() - cpu
            entry["calls"] += 1
            with self._lock:
                self._active = [a for a in self._active if a is not live]
            entry["peak"] = max(entry["peak"], live["peak"], _rss())

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        static = isinstance(inspect.getattr_static(owner, attribute), staticmethod)
        self._originals.append((owner, attribute, staticmethod(original) if static else original))

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, staticmethod(timed) if static else timed)

    def wrap_iter(self, owner, attribute: str, name: str) -> None:
        """Like :meth:`wrap` for a generator function: times producing each item, not creating it."""
        original = getattr(owner, attribute)
        self._originals.append((owner, attribute, original))

        @functools.wraps(original)
        def timed(*args, **kwargs):
            items = original(*args, **kwargs)
            while True:
                with self.stage(name):
                    item = next(items, _END)
                if item is _END:
                    return
                yield item

        setattr(owner, attribute, timed)

    def unwrap(self) -> None:
        for owner, attribute, original in reversed(self._originals):
            setattr(owner, attribute, original)
        self._originals.clear()


def instrument(recorder: Recorder) -> None:
    """Wrap the functions ingest calls, by the names it looks them up under."""
    import deltalake

    from pipelines.components import batches, cleaning, resources
    from pipelines.lake import quarantine, raw
    from pipelines.lake.table import Lake
    from pipelines.workflows import ingest as module

    recorder.wrap(module.ingest, "fn", "flow body (total)")
    recorder.wrap(module._land, "fn", "task land (total)")
    recorder.wrap(module._clean_and_commit, "fn", "task clean and commit (total)")
    recorder.wrap(raw, "raw_index", "land: list raw zone")
    recorder.wrap(raw.RawZone, "keep_file", "land: copy + sha256 into raw (unless in the manifest)")
    recorder.wrap(resources.Storage, "read_bytes", "read file bytes (raw)")
    recorder.wrap(Lake, "state", "read state (Delta history)")
    recorder.wrap_iter(batches, "csv_chunks", "clean: read CSV chunks (on the read-ahead thread)")
    recorder.wrap(cleaning, "parse_raw", "clean: parse CSV as text")
    recorder.wrap(cleaning, "cast_to_contract", "clean: cast to contract + quarantine flags")
    recorder.wrap(cleaning, "collapse_duplicates", "clean: dedupe last-wins (sort + unique)")
    recorder.wrap(quarantine, "replace", "commit: quarantine table")
    recorder.wrap(Lake, "overwrite", "commit: cleaned table, overwrite (first load's first batch)")
    recorder.wrap(Lake, "merge", "commit: cleaned table, merge (batches into an existing table)")
    recorder.wrap(Lake, "append", "commit: cleaned table, append (first load's later batches)")
    recorder.wrap(batches.Staged, "_write", "first load: spill a cleaned batch to local disk (background)")
    recorder.wrap(batches.Staged, "_read", "first load: read a spilled batch back (background)")
    recorder.wrap(batches.Staged, "superseded", "first load: find rows superseded across batches")
    recorder.wrap(deltalake.table.TableMerger, "execute", "delta: merge execute")
    recorder.wrap(module, "_record_meta", "commit: _meta runs + schemas")
    recorder.wrap(module, "publish_markdown", "prefect: markdown artifact")


def _print_table(title: str, wall: float, recorder: Recorder, baseline_rss: int) -> list[dict]:
    mib = 2**20
    body = recorder.stages.get("flow body (total)", {}).get("seconds", 0.0)
    rows = [
        {
            "stage": name,
            "calls": int(s["calls"]),
            "seconds": round(s["seconds"], 3),
            "cpu_seconds": round(s["cpu"], 3),
            "share": round(100 * s["seconds"] / wall, 1) if wall else 0.0,
            "peak_rss_mib": round(s["peak"] / mib),
            "rss_growth_mib": round((s["peak"] - s["start_rss"]) / mib),
        }
        for name, s in recorder.stages.items()
    ]
    rows.append(
        {
            "stage": "prefect (flow + task runs, outside the bodies)",
            "calls": 1,
            "seconds": round(wall - body, 3),
            "cpu_seconds": None,
            "share": round(100 * (wall - body) / wall, 1) if wall else 0.0,
            "peak_rss_mib": None,
            "rss_growth_mib": None,
        }
    )
    print(f"\n## {title}: {wall:.2f} s wall, process RSS before {baseline_rss / mib:.0f} MiB\n")
    print("| stage | calls | seconds | CPU seconds | % of wall | peak RSS MiB | growth MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['stage']} | {row['calls']} | {row['seconds']:.3f} | "
            f"{'' if row['cpu_seconds'] is None else format(row['cpu_seconds'], '.3f')} | {row['share']:.1f} | "
            f"{row['peak_rss_mib'] if row['peak_rss_mib'] is not None else ''} | "
            f"{row['rss_growth_mib'] if row['rss_growth_mib'] is not None else ''} |"
        )
    return rows


def profile(rows: int, cache: Path, cprofile_top: int = 0) -> dict:
    from bench import _data

    landing = _data.events_landing(cache, rows, with_increment=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=cache))
    base_landing = work / "landing"
    (base_landing / "events").mkdir(parents=True)
    os.link(landing / "events" / "part-0000.csv", base_landing / "events" / "part-0000.csv")
    registry = _data.write_registry(work / "registry", {"events": "events/*.csv"})
    _env.use_pipelines(data_url=work / "data", landing_url=base_landing, registry=registry)

    from pipelines.workflows.ingest import ingest

    report = {"rows": rows}
    try:
        for label in ("full load", "incremental +1%"):
            if label.startswith("incremental"):
                os.link(landing / "events" / "part-0001.csv", base_landing / "events" / "part-0001.csv")
            recorder = Recorder()
            instrument(recorder)
            before = _rss()
            profiler = None
            if cprofile_top:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            with recorder:
                started = time.perf_counter()
                result = ingest("events")
                wall = time.perf_counter() - started
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(cprofile_top)
            table = _print_table(f"{rows:,} rows, {label}", wall, recorder, before)
            print(
                f"\nrows in {result.rows_in:,}, written {result.written:,}, collapsed "
                f"{result.duplicates_collapsed:,}, late {result.late_rows:,}, "
                f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
            )
            report[label] = {"wall": round(wall, 3), "stages": table, "result": result.model_dump()}
            recorder.unwrap()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pipelines-bench")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N")
    parser.add_argument("--json", type=Path, help="write the breakdown as JSON here")
    args = parser.parse_args(argv)
    cache = args.out.resolve() / "cache"
    _env.isolate(cache)
    reports = [profile(rows, cache, args.cprofile) for rows in sorted(args.rows)]
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
