"""Tabular detection-NAS benchmark: format and loader, builder, statistics, replay."""

from nasdet.benchmark.table import FORMAT, Benchmark, load_benchmark

__all__ = ["FORMAT", "Benchmark", "load_benchmark"]
