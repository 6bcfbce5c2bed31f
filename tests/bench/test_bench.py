"""The benchmark harness: a --quick smoke run of every benchmark, and the harness's own rules.

No timing is asserted anywhere: the machine is shared and noisy; bench/ measures, tests check shape.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from bench import (
    Benchmark,
    Case,
    Context,
    IsolatedPython,
    Measurement,
    Target,
    _child,
    _data,
    _harness,
    _report,
)
from bench.__main__ import select
from tests.bench import _quick

REPO = Path(__file__).resolve().parents[2]
EXPECTED = [
    "ingest",
    "incremental",
    "validation",
    "orchestration",
    "parallel",
    "share_append",
    "share_merge",
    "peer",
    "memory",
    "small_ingest",
    "slot",
    "cold_start",
    "no_new_data",
    "state_read",
]


def test_the_quick_smoke_runs_cover_every_benchmark_once():
    """The --quick smoke run is split in two files (so two test workers share it); together they run all."""
    together = [name for group in _quick.GROUPS for name in group]
    assert sorted(together) == sorted(EXPECTED) and len(set(together)) == len(together)
    for group in _quick.GROUPS:
        assert group == [name for name in EXPECTED if name in group]  # bench runs and reports in table order
    assert set(_quick.CHECKS) == set(EXPECTED)


@pytest.mark.local  # real data or a subprocess: not unit-fast
def test_unknown_benchmark_name_is_refused_with_a_suggestion(tmp_path):
    done = _quick.bench("--only", "ingset", tmp=tmp_path)
    assert done.returncode != 0
    assert "unknown benchmark 'ingset' (did you mean 'ingest'?)" in done.stderr
    assert "Known: ingest, incremental" in done.stderr


@pytest.mark.local  # a subprocess
def test_list_names_each_benchmark_its_target_and_any_floor(tmp_path):
    done = _quick.bench("--list", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    blocks = {
        block.split()[0]: block for block in done.stdout.split("\n") if block and not block[0].isspace()
    }
    assert list(blocks) == EXPECTED
    text = done.stdout
    small = text[text.index("small_ingest ") : text.index("\nslot ")]
    assert "≤ 3x the baseline's time" in small and "floor: an empty Prefect flow run" in small
    assert "floor: hand-written polars + one delta-rs upsert" in text[text.index("incremental ") :]
    assert "floor: the same ingests as plain function calls" in text[text.index("parallel ") :]
    assert "floor:" not in text[text.index("ingest ") : text.index("\nincremental ")]


def test_select_keeps_table_order_and_accepts_commas():
    available = dict.fromkeys(EXPECTED)
    assert select(available, ["memory,ingest"]) == ["ingest", "memory"]
    assert select(available, None) == EXPECTED


def test_registry_discovers_every_benchmark_module_in_table_order():
    found = _harness.discover()
    assert list(found) == EXPECTED
    for spec in found.values():
        assert isinstance(spec, Benchmark) and spec.ours and spec.baseline


def _toy(calls: list[str], *, fail: bool = False) -> Benchmark:
    def setup(size, context: Context) -> Case:
        def ours():
            calls.append("ours")
            if fail:
                raise ValueError("ours broke")
            return Measurement(2.0 * size, {"n": len(calls)})

        return Case(
            ours=ours,
            baseline=lambda: calls.append("baseline") or Measurement(float(size)),
            reset_ours=lambda: calls.append("reset-ours"),
            verify=lambda: {"checked": True},
            cleanup=lambda: calls.append("cleanup"),
        )

    return Benchmark(
        name="toy",
        ours="doubles",
        baseline="once",
        target=Target(1.5, "<=", "≤ 1.5x"),
        setup=setup,
        quick_size=3,
        full_size=30,
        warmup=1,
    )


def test_sides_alternate_after_warmup_and_measurements_replace_wall_time(tmp_path, monkeypatch):
    monkeypatch.setattr(
        _harness.gc, "collect", lambda: 0
    )  # a full collection per side is slow in pytest's heap
    calls: list[str] = []
    record = _harness.run_benchmark(_toy(calls), quick=True, runs=4, cache=tmp_path)
    sides = [c for c in calls if c in ("ours", "baseline")]
    # one warm-up round, then ours first on even runs and the baseline first on odd runs
    assert sides == [
        "ours",
        "baseline",
        "ours",
        "baseline",
        "baseline",
        "ours",
        "ours",
        "baseline",
        "baseline",
        "ours",
    ]
    assert calls.count("reset-ours") == 5 and calls[-1] == "cleanup"
    assert record["ours_stats"]["values"] == [6.0] * 4
    assert record["baseline_stats"]["median"] == 3.0
    assert record["ratio"] == 2.0 and record["score"] == 2.0 and record["met"] is False
    assert record["details"]["verified"] == {"checked": True}
    assert len(record["details"]["ours_runs"]) == 4
    assert not (tmp_path / "work" / "toy").exists()


def _document(records: list[dict]) -> dict:
    return {
        "generated_at": "2026-01-01T00:00:00+00:00",
        "command": "python -m bench",
        "quick": True,
        "duration_seconds": 1.0,
        "machine": {"cpu_count": 2, "cpu_model": "x", "ram_gib": 1.0, "os": "Linux"},
        "load_average": {"start": 0.5, "end": 0.7},
        "versions": {"python": "3.11"},
        "benchmarks": records,
    }


def _floored(calls: list[str], floor_seconds: float) -> Benchmark:
    """The toy with a floor side: ours 6 s, baseline 3 s, the floor ``floor_seconds``."""
    toy = _toy(calls)

    def setup(size, context: Context) -> Case:
        case = toy.setup(size, context)
        case.floor = lambda: calls.append("floor") or Measurement(floor_seconds)
        case.reset_floor = lambda: calls.append("reset-floor")
        return case

    return Benchmark(**{**toy.__dict__, "setup": setup, "floor": "the engine alone"})


def test_a_floor_runs_after_both_sides_in_every_round_and_is_scored_against_the_baseline(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(_harness.gc, "collect", lambda: 0)
    calls: list[str] = []
    record = _harness.run_benchmark(_floored(calls, 4.8), quick=True, runs=2, cache=tmp_path)
    sides = [c for c in calls if c in ("ours", "baseline", "floor")]
    # warm-up round, then two counted rounds: the floor always last, so it never opens a round
    assert sides == ["ours", "baseline", "floor", "ours", "baseline", "floor", "baseline", "ours", "floor"]
    assert calls.count("reset-floor") == 3
    assert record["floor"] == "the engine alone"
    assert record["floor_stats"]["values"] == [4.8, 4.8]
    assert record["floor_score"] == pytest.approx(1.6) and record["out_of_reach"] is True  # the target: 1.5x
    assert record["met"] is False

    text = _report.markdown(_document([record]))
    assert "| **missed** (out of the floor's reach) |" in text
    assert "## Floors" in text
    assert (
        "- **toy**: the engine alone: 4.800 s (4.800 s to 4.800 s), score 1.60x; the target (≤ 1.5x) is "
        "out of its reach: no change to this library's code alone can meet it." in text
    )

    calls.clear()
    reachable = _harness.run_benchmark(_floored(calls, 1.5), quick=True, runs=2, cache=tmp_path)
    assert reachable["floor_score"] == 0.5 and reachable["out_of_reach"] is False
    text = _report.markdown(_document([reachable]))
    assert "| **missed** |" in text and "the target (≤ 1.5x) is within its reach." in text


def test_a_case_without_a_floor_records_none(tmp_path, monkeypatch):
    monkeypatch.setattr(_harness.gc, "collect", lambda: 0)
    record = _harness.run_benchmark(_toy([]), quick=True, runs=2, cache=tmp_path)
    assert "floor_stats" not in record
    assert "## Floors" not in _report.markdown(_document([record]))


def test_a_failing_benchmark_is_recorded_not_raised(tmp_path):
    calls: list[str] = []
    record = _harness.run_benchmark(_toy(calls, fail=True), quick=True, runs=2, cache=tmp_path)
    assert record["error"] == "ValueError: ours broke"
    assert "cleanup" in calls
    text = _report.markdown(_document([record]))
    assert "| toy | 3 | 2 | — | — | — | — | ≤ 1.5x | **error** |" in text
    assert "- **toy**: ValueError: ours broke" in text


def test_target_directions():
    assert Target(1.3, "<=", "").met(1.3) and not Target(1.3, "<=", "").met(1.31)
    assert Target(0.7, ">=", "").met(0.7) and not Target(0.7, ">=", "").met(0.69)


def test_generated_data_is_deterministic_and_shaped_as_documented(tmp_path):
    first = _data.events(5_000)
    assert first.equals(_data.events(5_000))
    assert first.height == 5_000 and first.get_column("event_id").n_unique() == 4_900
    assert set(first.columns) == set(_data.SCHEMA)
    assert first.get_column("event_at").str.slice(0, 10).n_unique() > 30

    increment = _data.increment(5_000)
    new = increment.filter(pl.col("event_id") >= 5_000)
    late = increment.filter(pl.col("event_id") < 5_000)
    assert increment.height == 50 and new.height == 25 and late.height == 25
    base_watermark = first.get_column("updated_at").max()
    assert (late.get_column("updated_at") > base_watermark).all()
    assert (late.get_column("event_at") < first.get_column("event_at").max()).all()

    landing = _data.events_landing(tmp_path, 1_000, with_increment=True)
    assert sorted(p.name for p in (landing / "events").glob("*.csv")) == ["part-0000.csv", "part-0001.csv"]
    again = _data.events_landing(tmp_path, 1_000, with_increment=True)
    assert again == landing and (landing / ".complete").exists()
    assert not list(tmp_path.glob("data/.*.tmp"))


SCRIPT = """
import importlib.util, sys, time
from bench._child import report
started = time.perf_counter()
report(seconds=time.perf_counter() - started, has_prefect=importlib.util.find_spec("prefect") is not None,
       argv=sys.argv[1:])
"""


def test_isolated_python_runs_a_side_in_its_own_venv_and_reads_its_json(tmp_path):
    script = tmp_path / "side.py"
    script.write_text(SCRIPT)
    isolated = IsolatedPython("empty")
    wall, values = isolated.run(tmp_path / "cache", script, "--rows", "10")
    assert values["argv"] == ["--rows", "10"]
    assert values["has_prefect"] is False  # the project's venv is not visible to it
    assert wall >= values["seconds"] >= 0
    assert (isolated.folder(tmp_path / "cache") / ".ready").exists()


def test_isolated_python_failure_names_the_script_output(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('dlt is not installed')\n")
    with pytest.raises(RuntimeError, match="exited with 1:\\ndlt is not installed"):
        IsolatedPython("empty").run(tmp_path / "cache", script)


def test_baseline_first_benchmarks_open_every_round_with_the_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(
        _harness.gc, "collect", lambda: 0
    )  # a full collection per side is slow in pytest's heap
    calls: list[str] = []
    spec = _toy(calls)
    spec = Benchmark(**{**spec.__dict__, "baseline_first": True})
    _harness.run_benchmark(spec, quick=True, runs=2, cache=tmp_path)
    sides = [c for c in calls if c in ("ours", "baseline")]
    assert sides == ["baseline", "ours", "baseline", "ours", "ours", "baseline"]


def test_memory_refuses_a_4x_run_that_may_not_fit():
    from bench.memory import refusal

    assert refusal(2_000.0, None, 10_000.0) is None  # 8,000 MiB projected, 9,000 usable
    assert "may need up to 11.7 GiB (4 x the 1x peak of 2.9 GiB) and only 9.8 GiB" in refusal(
        3_000.0, None, 10_000.0
    )
    # with a measured 2x peak the projection follows the slope: 3,000 + 3 x 1,000, +10% = 6,600
    assert refusal(3_000.0, 4_000.0, 10_000.0) is None
    assert "extended to 4x" in refusal(3_000.0, 5_500.0, 10_000.0)  # 11,550 MiB projected
    assert refusal(3_000.0, None, None) is None  # no /proc/meminfo: nothing to go by


def test_a_child_reports_its_own_peak_memory_not_its_parents():
    ballast = bytearray(512 * 2**20)  # the parent holds 512 MiB, touched
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    script = "from bench._child import peak_rss_mib, report; report(peak=peak_rss_mib())"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    _, values = _child.run([sys.executable, "-c", script], env=env)
    assert 0 < values["peak"] < 256, values
    del ballast


def test_memory_scores_a_projection_when_the_4x_run_would_not_fit(tmp_path, monkeypatch):
    """Too little memory for 4x: the 2x peak is measured and the 4x peak projected, never an error.

    The children are replaced by a fake whose peak grows with the rows (this checks the scoring, not
    the ingest; the smoke run above runs the real memory benchmark)."""
    from bench import memory

    started: list[int] = []

    def fake_child(command, env=None):
        csv = Path(command[command.index("--landing") + 1]) / "events" / "part-0000.csv"
        rows = sum(1 for _ in csv.open()) - 1  # less the header
        started.append(rows)
        return 0.5, {"rows_written": rows, "peak_rss_mib": 100.0 + rows / 1_000}

    monkeypatch.setattr(memory, "available_mib", lambda: 1.0)
    monkeypatch.setattr(memory._child, "run", fake_child)
    record = _harness.run_benchmark(memory.BENCHMARK, quick=True, runs=1, cache=tmp_path)
    assert record["error"] is None, record.get("traceback")
    # 1x (warm-up and measured), then 2x once; the 4x input is never run.
    assert sorted(set(started)) == [10_000, 20_000] and 40_000 not in started
    assert record["baseline_stats"]["values"] == [110.0]
    assert record["details"]["peak_2x_mib"] == 120.0
    assert record["ours_stats"]["values"] == [140.0]  # 110 + 3 x (120 - 110)
    assert "The 4x run was not started (not run: the 4x input may need up to" in record["details"]["notes"]
    assert "projected from the measured 1x and 2x peaks" in record["details"]["notes"]
    assert record["met"] is True  # 140 / 110 = 1.27x <= 1.5x


def test_two_processes_building_one_cache_entry_build_it_once(tmp_path):
    """The second process waits for the first one's build and reuses it instead of racing it."""
    script = (
        "import sys, time; from pathlib import Path; from bench import _data\n"
        "def build(tmp):\n"
        "    (tmp / 'built-by').write_text(sys.argv[1]); time.sleep(1.0)\n"
        "folder = _data._generated(Path(sys.argv[2]) / 'entry', build)\n"
        "print((folder / 'built-by').read_text())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, name, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        for name in ("first", "second")
    ]
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(set(outputs)) == 1 and outputs[0] in ("first", "second")  # one build, seen by both
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]  # no temporary left
