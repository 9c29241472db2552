"""Two Ray nodes on this machine: prepare on Ray and a Ray-launcher sweep (BENCHMARKS.md, Scale).

Run it with the Python of an environment with the [ray] extra:
``/path/to/ray-env/bin/python scripts/bench_ray_cluster.py --output-dir /tmp/cluster``."""
import sys

from rerank.benchmark.ray_cluster import main

if __name__ == "__main__":
    sys.exit(main())
