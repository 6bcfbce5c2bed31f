"""Run one side in a fresh interpreter and report what it measured as one JSON line.

    python -m bench._child ours|baseline|prefect-floor --landing DIR --registry CSV --data DIR

The parent (cold start, memory, no_new_data) times the whole process from outside; inside, this
reports the import time, the run time and the peak resident memory of this process (VmHWM), so a
side's memory is never mixed with the parent's. ``prefect-floor`` runs one empty flow: what any
Prefect run in a fresh process costs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MARKER = "BENCH-RESULT "


def report(**values) -> None:
    """Print the result line the parent looks for (the last one wins)."""
    print(MARKER + json.dumps(values), flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a large
    parent would report the parent's size; VmHWM belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800
) -> tuple[float, dict]:
    """Run a child; returns (wall seconds, its reported values). A failed child raises with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with {done.returncode}:\n{tail}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(f"{' '.join(command[:4])} ... printed no {MARKER.strip()} line")
    return wall, json.loads(lines[-1][len(MARKER) :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._child")
    parser.add_argument("side", choices=["ours", "baseline", "prefect-floor"])
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    status = None
    if args.side == "ours":
        import pipelines.workflows.ingest  # noqa: F401 (the import is part of what is measured)
        from bench import _common

        imported = time.perf_counter()
        result = _common.run_ingest(data=args.data, landing=args.landing, registry=args.registry)
        rows, status = result.written, result.status
    elif args.side == "prefect-floor":
        from prefect import flow

        imported = time.perf_counter()
        flow(name="empty")(lambda: None)()  # on Prefect's in-process API, as ours runs
        rows = 0
    else:
        from bench import _handwritten

        imported = time.perf_counter()
        rows = _handwritten.ingest_csv(sorted((args.landing / "events").glob("*.csv")), args.data / "table")
    finished = time.perf_counter()
    report(
        import_seconds=round(imported - started, 3),
        run_seconds=round(finished - imported, 3),
        rows_written=rows,
        status=status,
        great_expectations_imported="great_expectations" in sys.modules,
        peak_rss_mib=round(peak_rss_mib(), 1),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
