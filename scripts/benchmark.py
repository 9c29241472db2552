"""The benchmark suite in one go: ``python scripts/benchmark.py [data=hwu64 data.path=../shared/data/hwu64]``.

Arguments are Hydra overrides of ``configs/benchmark.yaml`` (e.g.
``write_benchmarks_md=true``, ``benchmark.speed.joblib_sweep=false``,
``benchmark.seeds=3``). Writes ``outputs/benchmarks/<corpus>/``:
report.md, results.json and the plots.
"""
import logging
import sys


def main(argv: list[str]) -> None:
    from rerank.benchmark.suite import run_benchmark
    from rerank.config import compose_config

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    overrides = [a for a in argv if "=" in a]
    if bad := [a for a in argv if "=" not in a]:
        raise SystemExit(f"arguments must be Hydra overrides key=value, not {bad}")
    cfg = compose_config("benchmark", overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    run_benchmark(cfg, cli_overrides=overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
