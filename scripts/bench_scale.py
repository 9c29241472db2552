"""Scale (BENCHMARKS.md): ``python scripts/bench_scale.py --work /tmp/scale [--sizes hwu64 100 1000] [--utterances 8:10000,8:100000]``."""
import sys

from rerank.benchmark.scale import main

if __name__ == "__main__":
    sys.exit(main())
