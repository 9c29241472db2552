"""Import speed (BENCHMARKS.md): ``python scripts/bench_import.py [--hypotheses 1000000] [--nbest F --gold G]``."""
import sys

from rerank.benchmark.import_speed import main

if __name__ == "__main__":
    sys.exit(main())
