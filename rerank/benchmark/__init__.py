"""The benchmark suite (issue #5): every re-ranker variant and its alternatives on one corpus, in one go.

``run_benchmark(cfg)`` (``scripts/benchmark.py``) writes
``<benchmark.dir>/<corpus>/{report.md,results.json,*.png}``;
``render_benchmarks_md(results)`` renders the ``## Benchmark suite: <corpus>``
section of BENCHMARKS.md from results.json and ``update_benchmarks_md``
replaces only that section of the file.
"""
from rerank.benchmark.report import render_benchmarks_md, render_report, update_benchmarks_md
from rerank.benchmark.run import run_benchmark

__all__ = ["run_benchmark", "render_benchmarks_md", "render_report", "update_benchmarks_md"]
