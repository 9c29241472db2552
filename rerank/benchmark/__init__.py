"""The benchmark suite: every re-ranker variant and its alternatives on one corpus, and the speed benchmarks.

``run_benchmark(cfg)`` (``scripts/benchmark.py``) writes
``<benchmark.dir>/<corpus>/{report.md,results.json,*.png}``;
``render_benchmarks_md(results)`` renders the ``## Benchmark suite: <corpus>``
section of BENCHMARKS.md from results.json and ``update_benchmarks_md``
replaces only that section of the file. The names are imported on first use:
a speed benchmark that needs none of them does not pay for Lightning.
"""
import importlib

_LAZY = {"run_benchmark": "rerank.benchmark.suite", "render_benchmarks_md": "rerank.benchmark.report",
         "render_report": "rerank.benchmark.report", "update_benchmarks_md": "rerank.benchmark.report"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rerank.benchmark' has no attribute {name!r}")
