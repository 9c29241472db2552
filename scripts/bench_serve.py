"""Load test of the ranking service with promotions under load (BENCHMARKS.md):
``python scripts/bench_serve.py --output-dir outputs --data hwu64 [--seconds 60] [--workers 1]``."""
import sys

from rerank.benchmark.serve_load import main

if __name__ == "__main__":
    sys.exit(main())
