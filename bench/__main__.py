"""python -m bench [--quick] [--only NAME] [--runs N] [--warmup N] [--out DIR] [--cache DIR]"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"


def _default_cache() -> Path:
    return Path(
        os.environ.get("PIPELINES_BENCH_CACHE") or Path(tempfile.gettempdir()) / "pipelines-bench-cache"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks, each against its baseline in the same process, and write "
        "a markdown table and a JSON file.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run just this benchmark (repeat, or comma-separate, for several)",
    )
    parser.add_argument(
        "--runs", type=int, help="counted runs per side (default: each benchmark's own, else 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="uncounted rounds before the counted ones (default: each benchmark's own; 0 for a smoke run)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="where benchmarks.json/.md go"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="generated data, Prefect's database and isolated venvs, kept between runs "
        "(default: $PIPELINES_BENCH_CACHE, else <tmp>/pipelines-bench-cache)",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not update docs/benchmarks.md (it is only updated by a full-size run of every benchmark)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each benchmark's scratch folder")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    return args


def select(available: dict, only: list[str] | None) -> list[str]:
    """The names to run, in table order; unknown names are an error naming the known ones."""
    if not only:
        return list(available)
    wanted = [name.strip() for item in only for name in item.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, available, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SystemExit(
            f"error: unknown benchmark {', '.join(hints)}. Known: {', '.join(available)}. "
            "Use --list to see what each one measures."
        )
    return [name for name in available if name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = (args.cache or _default_cache()).resolve()
    cache.mkdir(parents=True, exist_ok=True)

    from bench import _env

    _env.isolate(cache)  # before anything imports Prefect
    from bench import _harness, _report

    available = _harness.discover()
    if args.list:
        for name, spec in available.items():
            target = spec.target.text if spec.target else "reported only"
            print(f"{name:14} {target}\n{'':14} ours: {spec.ours}\n{'':14} baseline: {spec.baseline}")
            if spec.floor:
                print(f"{'':14} floor: {spec.floor}")
        return 0
    names = select(available, args.only)
    code = _env.code()
    print(f"[bench] measuring pipelines at commit {code['commit']} from {code['folder']}", flush=True)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    records = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        record = _harness.run_benchmark(
            available[name],
            quick=args.quick,
            runs=args.runs,
            cache=cache,
            keep=args.keep,
            warmup=args.warmup,
        )
        status = record["error"] or f"ratio {record['ratio']:.2f}x" + (
            f", score {record['score']:.3f} {record['score_unit']}" if record["score"] is not None else ""
        )
        print(f"[bench] {name}: {status} ({record['seconds']:.0f} s)", flush=True)
        records.append(record)
    command = "python -m bench" + (" --quick" if args.quick else "")
    command += "".join(f" --only {n}" for n in (args.only or []))
    command += f" --runs {args.runs}" if args.runs else ""
    command += f" --warmup {args.warmup}" if args.warmup is not None else ""
    document = {
        "generated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "command": command,
        "quick": args.quick,
        "duration_seconds": round(time.perf_counter() - started, 1),
        "machine": _env.machine(),
        "load_average": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "versions": _env.versions(),
        "commit": code["commit"],
        "benchmarks": records,
    }
    full_set = not args.quick and not args.only
    docs = DOCS if full_set and not args.no_docs else None
    for path in _report.write(document, args.out.resolve(), docs):
        print(f"[bench] wrote {path}")
    if not full_set and not args.no_docs:
        print("[bench] docs/benchmarks.md left as it was (it records full-size runs of every benchmark)")
    print(_report.markdown(document))
    return 1 if any(r["error"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
