"""The benchmark suite in one go: ``python scripts/benchmark.py [data=hwu64 data.path=../shared/data/hwu64]``.

``mode=ablation``: only the evidence ablation (``rerank.benchmark.ablation``), written to
``ablation.md`` and ``ablation.json`` there. Arguments are Hydra overrides of ``configs/benchmark.yaml`` (e.g.
``write_benchmarks_md=true``, ``benchmark.speed.joblib_sweep=false``,
``benchmark.seeds=3``). Writes ``outputs/benchmarks/<corpus>/``:
report.md, results.json and the plots.
"""
import logging
import sys


def main(argv: list[str]) -> None:
    from rerank.benchmark.ablation import run_ablation
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
    if cfg["mode"] not in ("suite", "ablation"):
        raise SystemExit(f"mode must be suite or ablation, not {cfg['mode']!r}")
    (run_ablation if cfg["mode"] == "ablation" else run_benchmark)(cfg, cli_overrides=overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
