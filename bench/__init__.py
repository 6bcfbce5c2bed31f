"""Benchmarks, each run side by side with a baseline in the same process: ``python -m bench``.

To add one, write ``bench/<name>.py`` exposing ``BENCHMARK = Benchmark(...)``; see
docs/benchmarking.md. The names below are what a benchmark module needs.
"""

from bench._harness import Benchmark, Case, Context, Measurement, Stats, Target
from bench._isolated import IsolatedPython

__all__ = ["Benchmark", "Case", "Context", "IsolatedPython", "Measurement", "Stats", "Target"]
