"""The benchmark suite in one go: ``python scripts/benchmark.py [data=hwu64 data.path=../shared/data/hwu64]``.

Arguments are Hydra overrides of ``configs/benchmark.yaml`` (e.g.
``write_benchmarks_md=true``, ``benchmark.speed.joblib_sweep=false``,
``benchmark.seeds=3``). Writes ``outputs/benchmarks/<corpus>/``:
report.md, results.json and the plots.
"""
import logging
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rerank.benchmark.suite import run_benchmark

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    overrides = [a for a in argv if "=" in a]
    if bad := [a for a in argv if "=" not in a]:
        raise SystemExit(f"arguments must be Hydra overrides key=value, not {bad}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    run_benchmark(OmegaConf.to_container(cfg, resolve=True), cli_overrides=overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
